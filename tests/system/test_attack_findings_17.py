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


# --- FHIR XML: no DTD, no entity, whatever the encoding; every stored narrative is XHTML --------

_ENTITIES = '<!ENTITY a0 "' + "a" * 50 + '">' + "".join(
    f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 4))


def _xml_bodies() -> dict[str, bytes]:
    doctype = f"<!DOCTYPE Patient [{_ENTITIES}]>"
    patient = f'<Patient {FHIR_NS}><gender value="&a3;"/></Patient>'
    xxe = f'<!DOCTYPE Patient [<!ENTITY x SYSTEM "file:///etc/hostname">]><Patient {FHIR_NS}><gender value="&x;"/></Patient>'
    return {
        "utf-16 entities": f'<?xml version="1.0" encoding="UTF-16"?>{doctype}{patient}'.encode("utf-16"),
        "utf-16 xxe": f'<?xml version="1.0" encoding="UTF-16"?>{xxe}'.encode("utf-16"),
        "utf-16-le no bom": f"{doctype}{patient}".encode("utf-16-le"),
        "utf-32": f'<?xml version="1.0" encoding="UTF-32"?>{doctype}{patient}'.encode("utf-32"),
        "latin-1 declared": f'<?xml version="1.0" encoding="ISO-8859-1"?><Patient {FHIR_NS}/>'.encode(),
        "doctype after a long comment": f'<?xml version="1.0"?><!--{"x" * 5000}-->{doctype}{patient}'.encode(),
        "external dtd after a long comment": (f'<!--{"x" * 5000}--><!DOCTYPE Patient SYSTEM "file:///etc/hostname">'
                                              f'<Patient {FHIR_NS}><active value="true"/></Patient>').encode(),
        "utf-8 entities": f"{doctype}{patient}".encode(),
    }


@pytest.mark.parametrize("name", list(_xml_bodies()))
def test_xml_bodies_with_a_dtd_are_refused_in_every_encoding(client: httpx.Client, name: str) -> None:
    """Rule: FHIR XML is UTF-8 and carries no DOCTYPE and no entity declaration. Before, the byte check
    looked at UTF-8 text only (and a DOCTYPE within the first 4 kB only): a UTF-16 body's internal
    entities were expanded by libxml2 into the stored resource."""
    body = _xml_bodies()[name]
    for path, method in (("/Patient", "POST"), ("/Patient/$validate", "POST"), ("", "POST")):
        response = client.request(method, path, content=body, headers=XML)
        assert response.status_code == 400, (path, response.text)
        assert "a" * 60 not in response.text  # no entity was expanded
        assert response.json()["issue"][0]["expression"] == ["body"]


@pytest.mark.parametrize("div", [
    f'<!DOCTYPE div [{_ENTITIES}]><div xmlns="http://www.w3.org/1999/xhtml" title="&a3;">x</div>',
    '<!DOCTYPE div [<!ENTITY x SYSTEM "file:///etc/hostname">]><div xmlns="http://www.w3.org/1999/xhtml">&x;</div>',
    '<div xmlns="http://www.w3.org/1999/xhtml">&nbsp;&x;</div>',
    '<div xmlns="http://www.w3.org/1999/xhtml"><b>unclosed</div>',
    '<div xmlns="urn:not-xhtml">x</div>',
    '<p xmlns="http://www.w3.org/1999/xhtml">x</p>',
])
def test_every_narrative_written_is_a_plain_xhtml_div(client: httpx.Client, div: str) -> None:
    """Rule: a narrative div (of the resource, of a contained resource, of a Bundle entry) is a
    well-formed XHTML div without DTD or entities, or the write is a 400 naming it. Before, JSON took
    any text: a DOCTYPE with entity declarations was stored and parsed again each time the resource
    was written as XML (an undefined ``&x;`` came out as an entity reference in the XML), and a
    malformed div made every XML read or search page that held the resource fail."""
    narrative = {"status": "generated", "div": div}
    cases = [
        ("/Patient", {"resourceType": "Patient", "text": narrative}, "Patient.text.div"),
        ("/Patient", {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "p",
                                                                 "text": narrative}]},
         "Patient.contained[0].text.div"),
        ("/Bundle", {"resourceType": "Bundle", "type": "collection",
                     "entry": [{"resource": {"resourceType": "Patient", "text": narrative}}]},
         "Bundle.entry[0].resource.text.div"),
    ]
    for path, body, element in cases:
        response = client.post(path, json=body)
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == [element]
    update = client.put("/Patient/narrative-attack", json={"resourceType": "Patient", "text": narrative})
    assert update.status_code == 400


def test_a_good_narrative_still_round_trips_through_xml(client: httpx.Client) -> None:
    """The rule above keeps what FHIR allows: XHTML with character references and markup."""
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><p>a &amp; b &#233; <b>c</b></p></div>'
    created = client.post("/Patient", json={"resourceType": "Patient", "text": {"status": "generated", "div": div}})
    assert created.status_code == 201, created.text
    as_xml = client.get(f"/Patient/{created.json()['id']}", params={"_format": "xml"})
    assert as_xml.status_code == 200 and b"<b>c</b>" in as_xml.content


# --- a client's FHIRPath cannot pin a worker ----------------------------------------------------

_UNION = "(1|2|3|4|5|6|7|8|9|10)"
_COSTLY = {  # each multiplies collections: 10 items per level, 10^5..10^7 items unbounded
    "nested select": _UNION + f".select({_UNION})" * 5 + ".count()",
    "nested select, union on top": f"({_UNION + f'.select({_UNION})' * 4}) | ({_UNION + f'.select({_UNION})' * 4})",
    "repeat over a product": f"{_UNION}.select({_UNION}.select({_UNION}.select({_UNION}.select({_UNION})))).count()",
}


@pytest.mark.parametrize("name", list(_COSTLY))
def test_a_view_too_costly_to_evaluate_is_refused_within_seconds(client: httpx.Client, name: str) -> None:
    """Rule: one FHIRPath evaluation has a budget (``engine.MAX_COLLECTION`` items in a collection,
    ``engine.MAX_SECONDS``); beyond it the run is refused with a 4xx ``too-costly`` naming FHIRPath,
    made before the answer starts streaming. Before, five nested selects ran for minutes on one
    resource (408 s measured), for any caller with search permission."""
    import time

    client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Costly"}]})
    view = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
            "select": [{"column": [{"name": "x", "path": _COSTLY[name]}]}]}
    started = time.monotonic()
    response = client.post("/$viewdefinition-run", json={"resourceType": "Parameters", "parameter": [
        {"name": "viewResource", "resource": view}, {"name": "_limit", "valueInteger": 1}]})
    assert time.monotonic() - started < 20
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["code"] == "too-costly"


def test_a_patch_where_too_costly_to_evaluate_is_refused(client: httpx.Client) -> None:
    """Rule: the same budget bounds a FHIRPath Patch's ``where()`` criteria: 400 too-costly naming the
    operation's path, nothing written."""
    created = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Costly"}]}).json()
    criteria = _COSTLY["nested select"] + " > 0"
    response = _patch(client, f"/Patient/{created['id']}", _operation("delete", f"Patient.name.where({criteria})"))
    body = _outcome(response)
    assert body["issue"][0]["code"] == "too-costly"
    assert body["issue"][0]["expression"] == ["Parameters.parameter[0].path"]
    assert client.get(f"/Patient/{created['id']}").json()["meta"]["versionId"] == "1"


# --- terminology inputs are typed: a malformed one is a 400 naming it, never a 500 --------------

_GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
_GENDER_CS = "http://hl7.org/fhir/administrative-gender"


def _inline(compose: object, **extra: object) -> dict:
    return {"resourceType": "ValueSet", "url": "urn:test:attack", "status": "active", "compose": compose, **extra}


@pytest.mark.parametrize(("path", "parameters", "element"), [
    ("/ValueSet/$expand", [{"name": "valueSet", "resource": _inline({"include": "x"})}], "ValueSet.compose.include"),
    ("/ValueSet/$expand", [{"name": "valueSet", "resource": _inline({"include": ["x", 5]})}],
     "ValueSet.compose.include[0]"),
    ("/ValueSet/$expand", [{"name": "valueSet", "resource": _inline(
        {"include": [{"system": "urn:s", "concept": "x"}]})}], "ValueSet.compose.include[0].concept"),
    ("/ValueSet/$expand", [{"name": "valueSet", "resource": _inline(
        {"include": [{"valueSet": [5]}]})}], "ValueSet.compose.include[0].valueSet[0]"),
    ("/ValueSet/$expand", [{"name": "valueSet", "resource": _inline(
        {"include": [{"system": "urn:s", "concept": [{"code": "a"}]}]}, url=5)}], "ValueSet.url"),
    ("/CodeSystem/$lookup", [{"name": "coding", "valueCoding": {"system": 5, "code": "male"}}], "coding.system"),
    ("/CodeSystem/$lookup", [{"name": "coding", "valueCoding": {"system": _GENDER_CS, "code": ["male"]}}],
     "coding.code"),
    ("/ValueSet/$validate-code", [{"name": "url", "valueUri": _GENDER_VS}, {"name": "coding", "valueString": "x"}],
     "coding"),
    ("/ValueSet/$validate-code", [{"name": "url", "valueUri": _GENDER_VS},
                                  {"name": "codeableConcept", "valueCodeableConcept": {"coding": "x"}}],
     "codeableConcept"),
    ("/ValueSet/$validate-code", [{"name": "url", "valueUri": _GENDER_VS},
                                  {"name": "codeableConcept", "valueCodeableConcept": {"coding": [5]}}],
     "codeableConcept.coding[0]"),
    ("/CodeSystem/$subsumes", [{"name": "codingA", "valueCoding": {"system": {"a": 1}, "code": "male"}},
                               {"name": "codingB", "valueCoding": {"system": _GENDER_CS, "code": "female"}}],
     "codingA.system"),
    ("/ConceptMap/$translate", [{"name": "system", "valueUri": "urn:x"}, {"name": "code", "valueCode": "x"},
                                {"name": "reverse", "valueString": "maybe"}], "reverse"),
])
def test_malformed_terminology_inputs_are_a_400_naming_them(
    client: httpx.Client, path: str, parameters: list, element: str,
) -> None:
    """Rule: every terminology input is checked for its type before use: an inline ValueSet is
    validated as the resource it claims to be (a stored one was, on write), codings' parts are
    strings, flags are true/false. Before, a string where an include or a system belonged was a
    500 (``'str' object has no attribute 'get'``, ``'int' object has no attribute 'partition'``),
    an unknown ``reverse`` silently meant false."""
    response = client.post(path, json={"resourceType": "Parameters", "parameter": parameters})
    body = _outcome(response)
    assert body["issue"][0]["expression"] == [element]


# --- what XML cannot carry never reaches it: refused on write, replaced in errors ---------------

_FORBIDDEN = ["\u0000", "\u0001", "\u000b", "\u001f", "\uffff", "\ufffe"]


@pytest.mark.parametrize("character", _FORBIDDEN)
def test_strings_with_control_characters_are_refused_on_write(client: httpx.Client, character: str) -> None:
    """Rule: a FHIR string holds no code point below 32 but tab, CR and LF (datatypes.html#string), and
    none XML cannot carry: a write holding one is a 400 naming the element, in every place a string
    can be. Before, JSON stored them, and every XML read, search page or history holding the resource
    was a 500 (lxml: 'All strings must be XML compatible')."""
    text = f"a{character}b"
    cases = [
        ({"resourceType": "Patient", "name": [{"family": text}]}, "Patient.name[0].family"),
        ({"resourceType": "Patient", "extension": [{"url": "urn:x", "valueString": text}]},
         "Patient.extension[0].valueString"),
        ({"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "p",
                                                     "name": [{"text": text}]}]}, "Patient.contained[0].name[0].text"),
    ]
    for body, element in cases:
        response = client.post("/Patient", content=json.dumps(body), headers={"Content-Type": "application/fhir+json"})
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == [element]
    allowed = client.post("/Patient", json={"resourceType": "Patient", "name": [{"text": "tab\there\r\nnew line"}]})
    assert allowed.status_code == 201, allowed.text


def test_stored_data_xml_cannot_carry_is_a_typed_error_not_a_500(client: httpx.Client, server, unique: str) -> None:
    """Rule: a resource stored before the rule above (through the store, as a migration would leave it)
    reads as JSON, and as XML answers a 400 naming the element instead of a 500."""
    from fhirfus.auth.access import SERVER
    from fhirfus.interactions import crud
    from fhirfus.store.repository import Store, create

    store = Store(server.database.engine)
    with store.writing() as conn:
        create(conn, "Patient", f"ctl-{unique}", {"resourceType": "Patient", "name": [{"family": "a\u0001b"}]})
    assert crud.read(store, SERVER, "Patient", f"ctl-{unique}") is not None
    assert client.get(f"/Patient/ctl-{unique}").status_code == 200
    for path, params in ((f"/Patient/ctl-{unique}", {}), ("/Patient", {"_id": f"ctl-{unique}"}),
                         (f"/Patient/ctl-{unique}/_history", {})):
        response = client.get(path, params={**params, "_format": "xml"})  # params replace a query in the path
        assert response.status_code == 400, (path, response.text)
        assert b"<OperationOutcome" in response.content and b"family" in response.content


@pytest.mark.parametrize("path", ["/Patient/a%01b", "/Patient/a%EF%BF%BFb/_history/1", "/Patient?_id=x&_sort=%01"])
def test_an_error_echoing_any_input_is_written_as_xml(client: httpx.Client, path: str) -> None:
    """Rule: an OperationOutcome is always writable in the asked format: characters XML cannot carry
    that a diagnostic echoes become U+FFFD. Before, the error itself failed to render as XML."""
    response = client.get(path, params={"_format": "xml"}) if "?" not in path else client.get(path + "&_format=xml")
    assert 400 <= response.status_code < 500, response.text
    assert b"<OperationOutcome" in response.content


# --- the published guide: every write path, every caller (these held; kept as the rule) ----------

_PUBLISHED = "/CodeSystem/cd-subtype"


def _published_writes(http: httpx.Client) -> dict[str, httpx.Response]:
    before = http.get(_PUBLISHED).json()
    url = before["url"]
    changed = {**before, "title": "changed by a client"}
    json_patch = [{"op": "replace", "path": "/title", "value": "x"}]
    fhirpath_patch = {"resourceType": "Parameters", "parameter": [
        _operation("replace", "CodeSystem.title", value={"valueString": "x"})]}
    patch_binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
                    "data": __import__("base64").b64encode(json.dumps(json_patch).encode()).decode()}

    def bundle(kind: str, entry: dict) -> httpx.Response:
        return http.post("", json={"resourceType": "Bundle", "type": kind, "entry": [entry]})

    writes = {
        "put": lambda: http.put(_PUBLISHED, json=changed),
        "json patch": lambda: http.patch(_PUBLISHED, content=json.dumps(json_patch),
                                         headers={"Content-Type": "application/json-patch+json"}),
        "fhirpath patch": lambda: http.patch(_PUBLISHED, json=fhirpath_patch),
        "delete": lambda: http.delete(_PUBLISHED),
        "cascading delete": lambda: http.delete(_PUBLISHED, params={"_cascade": "delete"}),
        "conditional update": lambda: http.put("/CodeSystem", params={"url": url}, json=changed),
        "conditional update, id in body": lambda: http.put("/CodeSystem", params={"url": "urn:none"}, json=changed),
        "conditional delete": lambda: http.delete("/CodeSystem", params={"url": url}),
        "create with the published label": lambda: http.post("/CodeSystem", json={
            **{k: v for k, v in changed.items() if k != "id"}, "url": "urn:test:attack-label"}),
        "transaction put": lambda: bundle("transaction", {"resource": changed,
                                                          "request": {"method": "PUT", "url": "CodeSystem/cd-subtype"}}),
        "transaction conditional put": lambda: bundle("transaction", {
            "resource": {k: v for k, v in changed.items() if k != "id"},
            "request": {"method": "PUT", "url": f"CodeSystem?url={url}"}}),
        "transaction delete": lambda: bundle("transaction", {"request": {"method": "DELETE",
                                                                         "url": "CodeSystem/cd-subtype"}}),
        "transaction conditional delete": lambda: bundle("transaction", {"request": {
            "method": "DELETE", "url": f"CodeSystem?url={url}"}}),
        "transaction json patch": lambda: bundle("transaction", {"resource": patch_binary, "request": {
            "method": "PATCH", "url": "CodeSystem/cd-subtype"}}),
        "transaction fhirpath patch": lambda: bundle("transaction", {"resource": fhirpath_patch, "request": {
            "method": "PATCH", "url": "CodeSystem/cd-subtype"}}),
        "batch put": lambda: bundle("batch", {"resource": changed,
                                              "request": {"method": "PUT", "url": "CodeSystem/cd-subtype"}}),
        "batch delete": lambda: bundle("batch", {"request": {"method": "DELETE", "url": "CodeSystem/cd-subtype"}}),
    }
    return {name: write() for name, write in writes.items()}


def _assert_refused(http: httpx.Client, answers: dict[str, httpx.Response]) -> None:
    for name, answer in answers.items():
        if name.startswith("batch"):
            assert answer.status_code == 200, (name, answer.text)
            assert answer.json()["entry"][0]["response"]["status"].startswith("4"), (name, answer.text)
        else:
            assert 400 <= answer.status_code < 500, (name, answer.text)
    stored = http.get(_PUBLISHED).json()
    assert stored["title"] != "changed by a client" and stored["title"] != "x"


def test_no_write_path_changes_a_published_resource_for_an_admin(client: httpx.Client) -> None:
    """Rule: the guide's resources (owner ``*``) are changed by the publisher only. Every write path
    (PUT, both PATCHes, DELETE and ``_cascade=delete``, conditional update and delete, a create
    carrying the ``*`` label, transaction and batch entries of each kind) is a 4xx and leaves the
    resource as published, for an unconfined caller."""
    version = client.get(_PUBLISHED).json()["meta"]["versionId"]
    _assert_refused(client, _published_writes(client))
    assert client.get(_PUBLISHED).json()["meta"]["versionId"] == version


def test_no_write_path_changes_a_published_resource_for_a_site_client(secure_server) -> None:
    """Rule: the same for a site client, which reads the published resources."""
    import uuid

    from auth_helpers import make_client

    from fhirfus.store.repository import Store

    site = make_client(Store(secure_server.database.engine), secure_server.root + "/auth/token", role="site",
                       site=f"S{uuid.uuid4().hex[:6]}", scope="system/*.cruds")
    with site.http(secure_server.base) as http:
        version = http.get(_PUBLISHED).json()["meta"]["versionId"]
        _assert_refused(http, _published_writes(http))
        assert http.get(_PUBLISHED).json()["meta"]["versionId"] == version


def test_a_bulk_load_does_not_change_a_published_resource(client: httpx.Client, server, tmp_path) -> None:
    """Rule: ``fhirfus load`` (the server's own bulk path) does not overwrite a published resource
    nor publish one (the ``*`` label) either."""
    from fhirfus.errors import FhirError
    from fhirfus.ingest.load import load_files
    from fhirfus.store.repository import Store

    before = client.get(_PUBLISHED).json()
    for resource in ({**before, "title": "changed by a load"},
                     {**before, "id": "attack-labelled", "url": "urn:test:attack-load", "title": "x"}):
        path = tmp_path / f"{resource['id']}.ndjson"
        path.write_text(json.dumps(resource) + "\n")
        with pytest.raises(FhirError) as refused:
            load_files(Store(server.database.engine), [path])
        assert refused.value.status in (400, 403)
    assert client.get(_PUBLISHED).json() == before
    assert client.get("/CodeSystem/attack-labelled").status_code == 404


# --- _cascade=delete and referential integrity: the audit trail, sites, permissions ---------------


def test_the_audit_trail_neither_blocks_a_delete_nor_is_cascaded_into(secure_server) -> None:
    """Rule: an AuditEvent names what a request touched (``entity.what``) but is a record, not data
    depending on it: it never makes a delete a 409, ``_cascade=delete`` never reaches it, and it
    stays. Before, with authentication on, every resource once written by id could not be deleted
    by anyone (409 naming an AuditEvent), and ``_cascade=delete`` walked into the audit trail (403)."""
    import time
    import uuid

    from auth_helpers import make_client

    from fhirfus.store.repository import Store

    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    admin = make_client(store, token_url, role="admin", scope="system/*.cruds")
    site = make_client(store, token_url, role="site", site=f"S{uuid.uuid4().hex[:6]}", scope="system/*.cruds")
    with admin.http(secure_server.base) as http, site.http(secure_server.base) as site_http:
        for cascade in (False, True):
            ids = []
            for writer in (http, site_http):
                created = writer.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
                assert writer.put(f"/Patient/{created}", json={"resourceType": "Patient", "id": created,
                                                               "active": True}).status_code == 200
                ids.append((writer, created))
            time.sleep(0.2)
            for writer, patient in ids:
                assert http.get("/AuditEvent", params={"entity": f"Patient/{patient}"}).json()["total"] >= 1
                answer = writer.delete(f"/Patient/{patient}", params={"_cascade": "delete"} if cascade else {})
                assert answer.status_code in (200, 204), answer.text
                assert writer.get(f"/Patient/{patient}").status_code == 410
                assert http.get("/AuditEvent", params={"entity": f"Patient/{patient}"}).json()["total"] >= 1


def test_a_cascading_delete_stays_in_the_callers_site_and_needs_delete_on_each_type(secure_server) -> None:
    """Rule: ``_cascade=delete`` reaches only what the caller sees (another site's referrer is left as
    it is, and not named), and needs delete permission on every type it reaches (403, nothing deleted)."""
    import uuid

    from auth_helpers import make_client

    from fhirfus.store.repository import Store

    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    site_a, site_b = f"A{uuid.uuid4().hex[:6]}", f"B{uuid.uuid4().hex[:6]}"
    label = "https://fhirfus.org/fhir/CodeSystem/site"
    admin = make_client(store, token_url, role="admin", scope="system/*.cruds")
    a = make_client(store, token_url, role="site", site=site_a, scope="system/*.cruds")
    a_narrow = make_client(store, token_url, role="site", site=site_a,
                           scope="system/Patient.cruds system/Observation.crus")
    b = make_client(store, token_url, role="site", site=site_b, scope="system/*.cruds")
    with (admin.http(secure_server.base) as http, a.http(secure_server.base) as a_http,
          a_narrow.http(secure_server.base) as narrow, b.http(secure_server.base) as b_http):
        def observation(writer: httpx.Client, patient: str, site: str | None = None) -> str:
            body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                    "subject": {"reference": f"Patient/{patient}"},
                    **({"meta": {"security": [{"system": label, "code": site}]}} if site else {})}
            answer = writer.post("/Observation", json=body)
            assert answer.status_code == 201, answer.text
            return answer.json()["id"]

        patient = a_http.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
        mine = observation(a_http, patient)
        theirs = observation(http, patient, site_b)  # another site's data naming A's patient (an admin wrote it)
        refused = narrow.delete(f"/Patient/{patient}", params={"_cascade": "delete"})
        assert refused.status_code == 403, refused.text
        assert a_http.get(f"/Patient/{patient}").status_code == 200
        assert a_http.get(f"/Observation/{mine}").status_code == 200
        done = a_http.delete(f"/Patient/{patient}", params={"_cascade": "delete"})
        assert done.status_code in (200, 204), done.text
        assert theirs not in done.text
        assert a_http.get(f"/Observation/{mine}").status_code == 410
        assert b_http.get(f"/Observation/{theirs}").status_code == 200


# --- $viewdefinition-run shows what a search would show --------------------------------------------


def test_a_view_over_binary_keeps_the_security_context_rule(secure_server) -> None:
    """Rule: a view's rows come from what a search would answer the caller: a Binary whose
    ``securityContext`` the caller may not read (no read scope on its type) gives no row. Before,
    ``$viewdefinition-run`` over Binary read every Binary of the site, data included, for a client
    that a read, search or history of the same Binary refuses."""
    import base64
    import uuid

    from auth_helpers import make_client

    from fhirfus.store.repository import Store

    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    site = f"S{uuid.uuid4().hex[:6]}"
    full = make_client(store, token_url, role="site", site=site, scope="system/*.cruds")
    narrow = make_client(store, token_url, role="site", site=site, scope="system/Binary.rs")
    secret = f"secret-{uuid.uuid4().hex}"
    view = {"resourceType": "ViewDefinition", "resource": "Binary", "status": "active",
            "select": [{"column": [{"name": "id", "path": "id"}, {"name": "data", "path": "data"}]}]}
    run = {"resourceType": "Parameters", "parameter": [{"name": "viewResource", "resource": view}]}
    with full.http(secure_server.base) as full_http, narrow.http(secure_server.base) as narrow_http:
        patient = full_http.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
        created = full_http.post("/Binary", json={
            "resourceType": "Binary", "contentType": "text/plain", "securityContext": {"reference": f"Patient/{patient}"},
            "data": base64.b64encode(secret.encode()).decode()})
        assert created.status_code == 201, created.text
        binary_id = created.json()["id"]
        assert narrow_http.get(f"/Binary/{binary_id}").status_code == 403  # the rule, for a read
        assert binary_id not in narrow_http.get("/Binary").text  # and for a search
        for http, shown in ((narrow_http, False), (full_http, True)):
            answer = http.post("/$viewdefinition-run", json=run)
            assert answer.status_code == 200, answer.text
            assert (binary_id in answer.text) is shown
            assert (base64.b64encode(secret.encode()).decode() in answer.text) is shown


# --- a site cannot shadow the terminology of the server or of an administrator --------------------


def test_a_site_value_set_does_not_shadow_an_administrators_for_unconfined_callers(secure_server) -> None:
    """Rule: canonical URLs resolve in the order of trust: published, then unowned (an admin's), then
    a site's (newest first). Before, the newest of any owner won, so a site client storing a ValueSet
    with the URL of an administrator's changed what ``$expand``, ``$validate-code`` and ``:in``
    answered to admins and to every unconfined caller (the server's own jobs included)."""
    import uuid

    from auth_helpers import make_client

    from fhirfus.store.repository import Store

    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    admin = make_client(store, token_url, role="admin", scope="system/*.cruds")
    site = make_client(store, token_url, role="site", site=f"S{uuid.uuid4().hex[:6]}", scope="system/*.cruds")
    url = f"urn:test:vs-{uuid.uuid4().hex[:8]}"

    def value_set(code: str) -> dict:
        return {"resourceType": "ValueSet", "url": url, "status": "active",
                "compose": {"include": [{"system": "urn:test:cs", "concept": [{"code": code}]}]}}

    with admin.http(secure_server.base) as admin_http, site.http(secure_server.base) as site_http:
        assert admin_http.post("/ValueSet", json=value_set("admins")).status_code == 201
        assert site_http.post("/ValueSet", json=value_set("sites")).status_code == 201
        expanded = admin_http.get("/ValueSet/$expand", params={"url": url}).json()
        assert [c["code"] for c in expanded["expansion"]["contains"]] == ["admins"]
        valid = admin_http.get("/ValueSet/$validate-code", params={"url": url, "system": "urn:test:cs",
                                                                   "code": "sites"}).json()
        assert valid["parameter"][0]["valueBoolean"] is False
        own = site_http.get("/ValueSet/$expand", params={"url": url}).json()  # the site sees its own
        assert [c["code"] for c in own["expansion"]["contains"]] == ["sites"]


def test_a_parquet_answer_is_bounded_and_streamed_formats_are_not(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule: a Parquet answer is built whole in memory, so it holds at most
    ``viewdefinition.PARQUET_ROWS`` rows (400 ``too-costly`` naming ``_format``, before the answer
    starts); NDJSON and CSV stream whatever the count. Before, one resource times a view of nested
    ``forEach`` grew the server's memory without bound. (The bound is lowered here: the server runs
    in this process.)"""
    from fhirfus.interactions import viewdefinition

    monkeypatch.setattr(viewdefinition, "PARQUET_ROWS", 150)
    client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Rows"}]})
    hundred = f"{_UNION}.select({_UNION})"
    view = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active", "select": [
        {"forEach": hundred, "select": [{"forEach": hundred, "column": [{"name": "n", "path": "$this"}]}]}]}

    def run(fmt: str) -> httpx.Response:
        return client.post("/$viewdefinition-run", json={"resourceType": "Parameters", "parameter": [
            {"name": "viewResource", "resource": view}, {"name": "_format", "valueString": fmt},
            {"name": "_limit", "valueInteger": 151}]})

    refused = run("parquet")
    body = _outcome(refused)
    assert body["issue"][0]["code"] == "too-costly" and body["issue"][0]["expression"] == ["_format"]
    streamed = run("ndjson")
    assert streamed.status_code == 200 and streamed.content.count(b"\n") == 151
    monkeypatch.setattr(viewdefinition, "PARQUET_ROWS", 200)
    assert run("parquet").status_code == 200


def test_a_site_client_view_never_reaches_another_sites_rows(secure_server) -> None:
    """Rule (held; kept): whatever a site client names — another site's patient or group, one of the
    guide's views, FHIRPath that walks references (``getReferenceKey``, ``descendants``,
    ``resolve``) — its run holds rows of its own site only, and naming another site's Group answers
    like a Group never written."""
    import uuid

    from auth_helpers import make_client

    from fhirfus.store.repository import Store

    store = Store(secure_server.database.engine)
    token_url = secure_server.root + "/auth/token"
    suffix = uuid.uuid4().hex[:8]
    a = make_client(store, token_url, role="site", site=f"VA{suffix}", scope="system/*.cruds")
    b = make_client(store, token_url, role="site", site=f"VB{suffix}", scope="system/*.cruds")
    marker = f"secret-{suffix}"
    with a.http(secure_server.base) as on_a, b.http(secure_server.base) as on_b:
        theirs = on_b.post("/Patient", json={"resourceType": "Patient", "name": [{"family": marker}]}).json()["id"]
        on_b.post("/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": marker},
                                        "subject": {"reference": f"Patient/{theirs}"}})
        group = on_b.post("/Group", json={"resourceType": "Group", "type": "person", "actual": True,
                                          "member": [{"entity": {"reference": f"Patient/{theirs}"}}]}).json()["id"]
        mine = on_a.post("/Patient", json={"resourceType": "Patient", "link": [
            {"other": {"reference": f"Patient/{theirs}"}, "type": "seealso"}]})

        def run(parameters: list[dict]) -> httpx.Response:
            return on_a.post("/$viewdefinition-run", json={"resourceType": "Parameters", "parameter": parameters})

        def inline(resource: str, path: str) -> dict:
            return {"name": "viewResource", "resource": {"resourceType": "ViewDefinition", "resource": resource,
                                                          "select": [{"column": [{"name": "x", "path": path}]}]}}

        answers = [
            run([inline("Observation", "code.text"), {"name": "patient", "valueString": theirs}]),
            run([inline("Patient", "name.family.first()"), {"name": "patient", "valueString": f"Patient/{theirs}"}]),
            run([inline("Observation", "code.text")]),
            run([inline("Patient", "link.other.getReferenceKey()")]),
            run([inline("Patient", "descendants().ofType(string).join(',')")]),
            *(run([{"name": "viewReference", "valueString": name}])
              for name in ("patient", "condition", "procedure", "twstrs-score", "adverse-event")),
        ]
        for answer in answers:
            assert answer.status_code in (200, 400), answer.text
            assert marker not in answer.text
        assert theirs not in answers[0].text + answers[1].text + answers[2].text
        assert mine.status_code == 400  # a reference to another site's patient does not resolve for A
        missing = run([inline("Patient", "id"), {"name": "group", "valueString": group}])
        never = run([inline("Patient", "id"), {"name": "group", "valueString": f"never-{suffix}"}])
        assert missing.status_code == never.status_code == 404
        assert missing.json()["issue"][0]["diagnostics"].replace(group, "X") == \
            never.json()["issue"][0]["diagnostics"].replace(f"never-{suffix}", "X")
