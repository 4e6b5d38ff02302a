"""Admin search as support uses it: they paste what a partner quotes, an id (`sp_…`, `org_…`) or a handle
written `@acme.brand`.

An id-shaped term is looked up exactly, on the columns that hold that kind of id. A substring search
(`icontains`, what `search_fields` does) cannot use an index: on the posts list (never purged) one id search
scanned the table and its joins several times, 1.5 s at 200k posts. Ids are opaque, so nobody searches
for a piece of one (the prefix is matched whatever its case: `Sp_…` copied from the start of a
sentence). Any other term goes to the list's `search_fields`, with a leading `@` dropped from
each word: handles are stored without it."""

import re

from django.db.models import Q

from config.api import ids

_AT = re.compile(r"(^|\s)@+")


class IdSearchMixin:
    # id prefix → the fields (exact lookups) a term of that kind is matched against, e.g.
    # {"sp": ("id",), "org": ("organization_id",)}
    id_search_fields: dict[str, tuple[str, ...]] = {}

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        prefix = term.partition("_")[0].lower()
        # A prefix is lowercase: one copied from a capitalised sentence (`Sp_…`) is still the id.
        term = prefix + term[len(prefix) :]
        if prefix in self.id_search_fields and ids.is_valid(prefix, term):
            match = Q()
            for field in self.id_search_fields[prefix]:
                match |= Q(**{field: term})
            return queryset.filter(match), False
        return super().get_search_results(request, queryset, _AT.sub(r"\1", search_term))
