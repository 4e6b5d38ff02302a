from django.core.asgi import get_asgi_application

from config import envfile, startup

envfile.load()
application = get_asgi_application()
startup.refuse_to_start_on_failed_checks("web")
