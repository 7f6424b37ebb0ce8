"""Narrative XHTML is limited to what R4 allows (txt-1, txt-2): nothing that runs in a browser."""

from __future__ import annotations

import httpx
import pytest

from fhirfus.fhir.narrative import div_issues
from fhirfus.fhir.validation import resource_issues

NS = 'xmlns="http://www.w3.org/1999/xhtml"'


def patient(div: str) -> dict:
    return {"resourceType": "Patient", "text": {"status": "generated", "div": div}}


def errors(div: str) -> list[str]:
    return [i.diagnostics for i in div_issues(div, "Patient.text.div") if i.severity == "error"]


@pytest.mark.parametrize("div", [
    f"<div {NS}><p>Jane <b>Doe</b>, born 1970</p></div>",
    f'<div {NS}><table class="grid"><tr><td colspan="2">x</td></tr></table></div>',
    f'<div {NS}><a href="https://example.org/x" title="t">link</a><img src="#photo" alt="p"/></div>',
    f"<div {NS}>caf&#233; &#160; &amp; &lt;b&gt;</div>",  # XML entities and character references
    f'<div {NS} xml:lang="en" lang="en"><span style="color: red">x</span></div>',
])
def test_ordinary_narrative_is_accepted(div: str) -> None:
    assert errors(div) == []


@pytest.mark.parametrize(("div", "says"), [
    (f"<div {NS}><script>alert(1)</script>x</div>", "<script>"),
    (f'<div {NS}><form action="https://evil"><input name="p"/></form></div>', "<form>"),
    (f'<div {NS}><iframe src="https://evil"></iframe>x</div>', "<iframe>"),
    (f'<div {NS}><object data="x.swf"></object>x</div>', "<object>"),
    (f'<div {NS}><p onclick="steal()">x</p></div>', "onclick"),
    (f'<div {NS}><img src="x" onerror="steal()"/></div>', "onerror"),
    (f'<div {NS}><a href="javascript:steal()">x</a></div>', "script URL"),
    (f'<div {NS}><a href=" JaVaScRiPt:steal()">x</a></div>', "script URL"),
    (f'<div {NS}><p data-x="1">x</p></div>', "'data-x'"),
    (f'<div {NS}><p href="https://x">x</p></div>', "'href' is not allowed on <p>"),
    (f'<div {NS}><svg xmlns="http://www.w3.org/2000/svg"/>x</div>', "not in the XHTML namespace"),
    ("<div><p>no namespace</p></div>", "XHTML namespace"),
    (f"<p {NS}>not a div</p>", "<div>"),
    (f"<div {NS}><p>unclosed</div>", "well-formed"),
    (f'<!DOCTYPE div [<!ENTITY x "y">]><div {NS}>&x;</div>', "well-formed"),
    (f"<div {NS}>Brand&reg; &nbsp;</div>", "well-formed"),  # HTML entities are not XHTML without a DTD
])
def test_what_could_run_or_is_not_xhtml_is_refused(div: str, says: str) -> None:
    found = errors(div)
    assert found and all(m.startswith("txt-1") for m in found)
    assert any(says in m for m in found), found


def test_an_empty_narrative_is_a_warning_txt2() -> None:
    issues = div_issues(f"<div {NS}>\n   </div>", "Patient.text.div")
    assert [(i.severity, i.diagnostics[:5]) for i in issues] == [("warning", "txt-2")]
    assert div_issues(f'<div {NS}><img src="#a" alt=""/></div>', "x") == []  # an image is content


def test_the_issue_names_the_narrative_element_also_in_contained_resources() -> None:
    bad = f"<div {NS}><script>x</script></div>"
    resource = {**patient(f"<div {NS}>ok</div>"), "contained": [{"resourceType": "Organization", "id": "o",
                                                                  "text": {"status": "generated", "div": bad}}]}
    assert [i.expression for i in resource_issues(resource)] == [("Patient.contained[0].text.div",)]


def test_a_script_in_narrative_is_not_stored(client: httpx.Client) -> None:
    response = client.post("/Patient", json=patient(f"<div {NS}><script>alert(1)</script>hi</div>"))
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Patient.text.div"] and "<script>" in issue["diagnostics"]
