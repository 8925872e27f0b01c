"""Artifactory item properties as the REST API spells them: key checks, deploy matrix params, `?properties=` values.

Plain string work with no HTTP client, so an operator or sensor can check its arguments when a DAG file is parsed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote

# characters Artifactory refuses in property keys (JFrog REST "Set Item Properties")
_FORBIDDEN_KEY_CHARS = set(")(}{][*+^$\\/~`!@#%&<>;=,±§ ")

PropertyValues = str | Sequence[str]


def property_values(value: PropertyValues) -> list[str]:
    """A property's values as strings: a string (or any non-sequence) is one value, a sequence several."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return [str(value)]
    return [str(v) for v in value]


def check_property_key(key: str) -> str:
    """The key itself, or ValueError naming the characters Artifactory refuses in property keys."""
    if not key or _FORBIDDEN_KEY_CHARS & set(key):
        raise ValueError(f"Invalid Artifactory property key {key!r}: keys may not contain spaces or any of "
                         f"{''.join(sorted(_FORBIDDEN_KEY_CHARS - {' '}))}")
    return key


def _backslash_escaped(text: str, special: str) -> str:
    return "".join("\\" + ch if ch in special else ch for ch in text)


def matrix_params(properties: Mapping[str, PropertyValues] | None) -> str:
    """`;key=v1,v2` deploy matrix params: a list is several values, each value escaped then percent-encoded.

    JFrog's clients backslash-escape `\\ , ; | =` inside a value (jfrog-client-go
    `artifactory/services/utils/properties.go`; the Jenkins Artifactory plugin's `escapeProperty`, added after
    400 "Property key ... is invalid" for `;` and `|`), and a plain comma separates values. Escaping and
    then percent-encoding reads the same whether the server splits before or after decoding.
    """
    if not properties:
        return ""
    return "".join(
        f";{quote(check_property_key(k), safe='')}="
        + ",".join(quote(_backslash_escaped(v, "\\,;|="), safe="") for v in property_values(value))
        for k, value in properties.items()
    )


def encode_properties_param(properties: Mapping[str, PropertyValues]) -> str:
    """The `?properties=` value of Set Item Properties: `k1=v1%2Cv2;k2=v3`, as jfrog-client-go builds it.

    Properties are separated by a raw `;`, values by an encoded comma; inside a value `\\ , | =` get a
    backslash (JFrog REST "Set Item Properties") and everything is percent-encoded. A `;` inside a value is
    only percent-encoded (`%3B`): the doc names an escaped semicolon (`%5C;`) as a separator, so a backslash
    would split the value (jfrog-client-go `ToEncodedString(true)` escapes the same way).
    """
    if not properties:
        raise ValueError("properties must not be empty")
    return ";".join(
        f"{quote(check_property_key(k), safe='')}="
        + "%2C".join(quote(_backslash_escaped(v, "\\,|="), safe="") for v in property_values(value))
        for k, value in properties.items()
    )
