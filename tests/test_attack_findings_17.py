"""An attacker's pass over issue #17 (terminology, the published guide, $viewdefinition-run, FHIR
XML, FHIRPath Patch, ``_cascade=delete``): every finding as the rule it defends, over the whole
family of inputs that broke it. Auth off (``client``) unless a rule is about who may do what.
"""

from __future__ import annotations

import json

import httpx
import pytest

FHIR_NS = 'xmlns="http://hl7.org/fhir"'
XML = {"Content-Type": "application/fhir+xml"}


def _outcome(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0].get("expression"), body  # the element is named
    return body


def _operation(kind: str, path: str, **parts: dict) -> dict:
    return {"name": "operation", "part": [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path},
                                          *({"name": name, **value} for name, value in parts.items())]}


def _patch(client: httpx.Client, path: str, *operations: dict) -> httpx.Response:
    body = {"resourceType": "Parameters", "parameter": list(operations)}
    return client.patch(path, content=json.dumps(body), headers={"Content-Type": "application/fhir+json"})


# --- numbers a client writes are parsed within bounds: 400 naming the element, never a 500 ---------


@pytest.mark.parametrize("index", ["²", "١", "9" * 5000, "99999999999", "1e3", "-1", "0x1", " 1"])
def test_a_fhirpath_patch_index_is_a_small_ascii_number(client: httpx.Client, index: str) -> None:
    """Rule: a FHIRPath Patch path's ``[n]`` is ASCII digits of a sane length; anything else (Unicode
    digits that ``str.isdigit`` accepts but ``int`` does not, numbers beyond Python's digit limit) is a
    400 naming the operation's path, and the resource is unchanged."""
    created = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Index"}]}).json()
    response = _patch(client, f"/Patient/{created['id']}", _operation("delete", f"Patient.name[{index}]"))
    body = _outcome(response)
    assert body["issue"][0]["expression"] == ["Parameters.parameter[0].path"]
    assert client.get(f"/Patient/{created['id']}").json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize(("element", "value"), [
    ("valueInteger", "1" * 5000), ("valueInteger", "9" * 40), ("valueInteger", "-" + "9" * 4400),
    ("valueQuantity", "1" * 5000), ("valueQuantity", "0." + "1" * 5000), ("valueQuantity", "1e" + "9" * 5000),
])
def test_xml_numbers_beyond_any_fhir_range_are_a_400(client: httpx.Client, element: str, value: str) -> None:
    """Rule: an XML integer or decimal too long for FHIR (R4 integers are 32-bit; no decimal needs
    thousands of digits) is refused as a 400 naming the element: never handed to ``int()``/``float()``
    where it fails with a 500 (Python refuses int() of more than 4300 digits)."""
    inner = f'<value value="{value}"/>' if element == "valueQuantity" else f'value="{value}"'
    xml_value = f"<valueQuantity>{inner}</valueQuantity>" if element == "valueQuantity" else f"<valueInteger {inner}/>"
    body = (f'<Observation {FHIR_NS}><status value="final"/><code><text value="x"/></code>{xml_value}'
            "</Observation>").encode()
    response = client.post("/Observation", content=body, headers=XML)
    assert response.status_code == 400, response.text
    assert "Observation.value" in json.dumps(response.json()["issue"][0].get("expression"))
