"""Property encoding for Artifactory: key checks, deploy matrix params, `?properties=` values; no HTTP client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from jfrog_provider.properties import (
    check_property_key,
    encode_properties_param,
    matrix_params,
    property_values,
)

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


@pytest.mark.parametrize("props,expected", [
    ({"a": "b c"}, ";a=b%20c"),
    ({"a": "x;y"}, ";a=x%5C%3By"),  # backslash-escaped, then percent-encoded
    ({"a": ["1", "2"]}, ";a=1,2"),  # a list is several values, separated by a plain comma
    ({"a": "1,2"}, ";a=1%5C%2C2"),  # a string is one value, its comma escaped
    ({"model.version": 3}, ";model.version=3"),
    ({"a": "é=|\\"}, ";a=%C3%A9%5C%3D%5C%7C%5C%5C"),
    (None, ""),
])
def test_matrix_params_encoding(props, expected):
    assert matrix_params(props) == expected


@pytest.mark.parametrize("key", ["a b", "a;b", "a=b", "", "a,b"])
def test_invalid_property_keys_are_value_errors(key):
    with pytest.raises(ValueError):
        matrix_params({key: "v"})


def test_encode_properties_param_follows_jfrog_client_go():
    # raw ';' between properties, encoded ',' between values; '\\ , | =' escaped; ';' inside only encoded
    assert encode_properties_param({"k": ["a=b", "x,y"], "s": "p;q|r"}) == "k=a%5C%3Db%2Cx%5C%2Cy;s=p%3Bq%5C%7Cr"


@pytest.mark.parametrize("value,expected", [("a", ["a"]), (["a", "b"], ["a", "b"]), (3, ["3"]), (("x",), ["x"])])
def test_property_values_are_one_or_several_strings(value, expected):
    assert property_values(value) == expected


def test_check_property_key_names_the_key():
    assert check_property_key("model.version") == "model.version"
    with pytest.raises(ValueError, match="'a b'"):
        check_property_key("a b")


def test_importing_it_loads_no_http_client():
    # sensors check their property keys while a DAG file is parsed: that must not pull in requests (~0.1 s)
    code = "import sys, jfrog_provider.properties; print(sorted({'requests', 'urllib3'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=PLUGINS, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
