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
from django.utils.text import smart_split, unescape_string_literal

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


class RelatedIdsSearchMixin:
    """Name and handle search on a big table whose `search_fields` go through its foreign keys
    (`social_account__identity__handle`, `project__name`, `organization__name` on the posts).

    Django's search ORs a substring match of each field across the joins, which no index can answer: at
    200k posts `?q=acme` read every post and its account, project and organization (470 ms). Here each term
    is matched first on the small related tables (accounts, projects, organizations: the same substring
    match, on hundreds or thousands of rows), and the big table is then filtered by the ids found, as
    literal lists (`social_account_id IN (…) OR project_id IN (…) …`), which its foreign-key indexes
    answer (0.5 ms). A sub-select in their place still let the planner walk the primary key backwards
    (187 ms). Terms are split and unquoted as Django does, each term must match (AND), any of the fields
    (OR).

    A term matching more than `related_ids_cap` rows of one related table (`creator` among 20,000 accounts)
    is matched through a sub-select instead: the results stay complete, the statement stays small, and a term
    that broad matches so many rows that the newest page is found early in the primary key's order.

    A field of the table itself (the ledger's `reason`) is matched in place, a substring of every row as in
    Django's search: only for a table whose size affords it."""

    related_ids_cap = 1000

    def get_search_results(self, request, queryset, search_term):
        fields = self.get_search_fields(request)
        terms = [_unquoted(bit) for bit in smart_split(search_term)]
        if not terms:
            return super().get_search_results(request, queryset, search_term)
        by_relation: dict[str, list[str]] = {}
        local = []
        for name in fields:
            relation, _, lookup = name.partition("__")
            if lookup:
                by_relation.setdefault(relation, []).append(f"{lookup}__icontains")
            else:
                local.append(f"{name}__icontains")
        for term in terms:
            match = Q.create([(lookup, term) for lookup in local], connector=Q.OR)
            for relation, lookups in by_relation.items():
                field = queryset.model._meta.get_field(relation)
                related = field.related_model._default_manager.filter(
                    Q.create([(lookup, term) for lookup in lookups], connector=Q.OR)
                ).values_list("pk", flat=True)
                found = list(related[: self.related_ids_cap + 1])
                if len(found) > self.related_ids_cap:
                    match |= Q(**{f"{field.attname}__in": related})
                elif found:
                    match |= Q(**{f"{field.attname}__in": found})
            if not match:  # nothing of any kind matches this term
                return queryset.none(), False
            queryset = queryset.filter(match)
        return queryset, False


def _unquoted(bit: str) -> str:
    # As Django's own search: "web app" (quoted) is one term, not two.
    if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
        return unescape_string_literal(bit)
    return bit
