from django.core.wsgi import get_wsgi_application

from config import envfile, startup

envfile.load()
application = get_wsgi_application()
startup.refuse_to_start_on_failed_checks("web")
