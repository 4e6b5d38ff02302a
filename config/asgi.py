from django.core.asgi import get_asgi_application

from config import envfile

envfile.load()
application = get_asgi_application()
