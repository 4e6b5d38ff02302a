"""A faithful local stand-in of TikTok and Instagram (PLATFORMS.md "What the sandbox must do"), mounted under
/sandbox/ only when LAYERS_PLATFORMS == "sandbox". All state is in the database (the web server runs
several processes) and every clock read is django.utils.timezone.now(), so tests can move time."""
