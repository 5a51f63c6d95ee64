"""Conditional matching: ``ifNoneExist``, conditional update/delete, conditional references.

Only criteria that can be answered exactly from the blind identifier index are
accepted: ``identifier=[system|]value`` (comma = or) and ``_id``; several
parameters are and-ed. Anything else is refused, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl

from ingest.errors import NotSupportedError, entry_issue
from security.pseudonym import Pseudonymizer

IdsByToken = Callable[[str, Iterable[str]], list[str]]


def identifier_tokens(pseudo: Pseudonymizer, rtype: str, idents: Iterable[tuple[str, str]]) -> set[str]:
    """Every token a resource with these identifiers is findable by."""
    out: set[str] = set()
    for system, value in idents:
        out.add(pseudo.identifier_token(rtype, system, value))
        out.add(pseudo.identifier_token(rtype, None, value))
    return out


def query_tokens(pseudo: Pseudonymizer, rtype: str, raw: str) -> set[str]:
    """Tokens for one ``identifier`` search value (``system|value``, ``|value`` or ``value``)."""
    out = set()
    for item in raw.split(","):
        system, sep, value = item.partition("|")
        if not sep:
            system, value = "", item
            out.add(pseudo.identifier_token(rtype, None, value))
        elif value:
            out.add(pseudo.identifier_token(rtype, system, value))
    return out


def match(
    pseudo: Pseudonymizer,
    rtype: str,
    query: str,
    ids_by_token: IdsByToken,
    at: int | None,
    exists: Callable[[str], bool],
    extra: dict[str, set[str]] | None = None,
) -> list[str]:
    """Ids of current ``rtype`` resources matching ``query``.

    ``extra`` maps tokens to ids created earlier in the same transaction.
    Raises NotSupportedError for criteria other than identifier and _id.
    """
    params = parse_qsl(query, keep_blank_values=True)
    if not params:
        raise NotSupportedError(
            "empty criteria", [entry_issue(at, "request", "not-supported", "conditional criteria are empty")]
        )
    result: set[str] | None = None
    for name, value in params:
        if name == "identifier":
            tokens = query_tokens(pseudo, rtype, value)
            found = set(ids_by_token(rtype, tokens))
            for token in tokens:
                found |= (extra or {}).get(token, set())
        elif name == "_id":
            found = {i for i in value.split(",") if exists(i)}
        else:
            raise NotSupportedError(
                "unsupported criteria",
                [entry_issue(at, "request", "not-supported", "conditional criteria support only identifier and _id")],
            )
        result = found if result is None else result & found
    return sorted(result or ())
