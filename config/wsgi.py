from django.core.wsgi import get_wsgi_application

from config import envfile

envfile.load()
application = get_wsgi_application()
