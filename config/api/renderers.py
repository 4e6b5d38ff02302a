"""The API's JSON: DRF's output, written by orjson.

Encoding a page of 50 accounts with the standard library took about a tenth of the request
(BENCHMARKS.md, bench_api); orjson writes the same bytes several times faster. What orjson would write
differently goes through DRF's own encoder: datetimes (DRF writes `Z` for UTC), decimals, lazy strings and
anything else orjson does not know. U+2028 and U+2029 are escaped, as DRF does, so the output stays a strict
JavaScript subset. A pretty-printed answer (`Accept: application/json; indent=4`) and anything orjson
refuses (an integer beyond 64 bits) are left to DRF's renderer. One difference remains, deliberately: a
float that is not a number is written as null where DRF's strict encoder would have failed the request."""

import orjson
from rest_framework import renderers
from rest_framework.utils import encoders

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_default = encoders.JSONEncoder().default  # stateless: one instance serves every thread


class JSONRenderer(renderers.JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        pretty = accepted_media_type and "indent" in accepted_media_type  # the only parameter DRF reads
        if data is None or pretty:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(data, default=_default, option=_OPTIONS)
        except orjson.JSONEncodeError:
            # ASCII escapes here: what orjson refused may be a string that is not UTF-8 text (a lone
            # surrogate), which DRF's renderer would fail to encode after the view had done its work.
            return _ASCII.render(data, accepted_media_type, renderer_context)
        return out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")


class _AsciiJSONRenderer(renderers.JSONRenderer):
    ensure_ascii = True


_ASCII = _AsciiJSONRenderer()
