"""JSON in and out, whatever the client's Accept header says: the API has one representation, so a
client sending `Accept: text/html` (or a `?format=` query) gets JSON rather than a 406 or a 404."""

from rest_framework.negotiation import DefaultContentNegotiation


class JsonOnlyNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
