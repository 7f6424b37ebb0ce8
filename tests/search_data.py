"""The search tests' data set and the reference implementation that computes their answers.

``generate`` builds a seeded, random but reproducible data set (Organizations with ``partOf``
chains, Patients with accented names and partial birth dates, Observations from two code
systems with quantities and date/Period/instant effective times, Encounters, RiskAssessments for
a number parameter, ValueSets for a uri parameter). Every resource carries the tag
``RUN_TAG`` and an id starting with ``RUN``, so the tests can share a server with others:
every query is constrained with ``_tag=RUN_TAG`` and nothing else interferes.

The ``expect_*`` functions are a small, independent reference implementation of the FHIR R4
comparison rules (strings, tokens, dates as half-open ranges, numbers with implicit precision,
quantities, references, uris). They read the generated JSON, not the server, so each test
compares the server's answer with a set computed here.
"""

from __future__ import annotations

import random
import threading
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

RUN = uuid.uuid4().hex[:8]
TAG_SYSTEM = "urn:fhirfus:test:search-run"
RUN_TAG = f"{TAG_SYSTEM}|{RUN}"
FLAG_SYSTEM = "urn:fhirfus:test:flags"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
PROFILE_A = f"http://example.org/fhir/{RUN}/StructureDefinition/patient-a"
PROFILE_B = f"http://example.org/fhir/{RUN}/StructureDefinition/patient-b"
MRN = f"http://hospital.example.org/{RUN}/mrn"
NID = f"http://national.example.org/{RUN}/id"
LOINC = "http://loinc.org"
ACME = f"http://acme.example.org/{RUN}/codes"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
VS_BASE = f"http://example.org/{RUN}/fhir/ValueSet"

UTC = UTC
UTC_MIN = datetime.min.replace(tzinfo=UTC)
UTC_MAX = datetime.max.replace(tzinfo=UTC)

# --------------------------------------------------------------------------- generation

ORGANIZATIONS = [
    # name, alias, city, index of partOf
    ("Hôpital Sainte-Anne", None, "Paris", None),
    ("Klinikum Nord", "KN", "Hamburg", 0),
    ("Clinique du Lac", None, "Genève", 0),
    ("Östra Sjukhuset", None, "Göteborg", None),
    ("Mount Sinaï", None, "New York", 3),
    ("Centre Médical", None, "Zürich", 1),
]
FAMILIES = ["Müller", "MULLER", "Muller", "Mueller", "Dupont", "Du Pont", "García", "Garcia", "Gárdonyi",
            "O'Brien", "Smith", "Smithson", "Nguyễn", "Ångström", "Zoë-Lee"]
GIVENS = ["Zoë", "Zoe", "Chloé", "José", "Ana", "Anaïs", "Björn", "Renée", "John", "Jon", "Émile"]
CITIES = ["Zürich", "Zurich", "Genève", "Bern", "Paris", "São Paulo"]
BIRTH_YEARS = [1969, 1970, 1970, 1970, 1971, 1985, 2000]

CODES = [
    # codings, text, kind of value
    ([(LOINC, "8867-4", "Heart rate")], "Heart rate", "rate"),
    ([(ACME, "8867-4", "Pulse")], None, "rate"),
    ([(LOINC, "29463-7", "Body weight"), (ACME, "WT", "Poids")], "Body wéight", "mass"),
    ([(LOINC, "8310-5", "Body temperature")], "Température", "temperature"),
    ([(None, "WT", None)], "Local weight", "mass"),
    ([(LOINC, "8480-6", "Systolic blood pressure")], None, "pressure"),
]
UNITS = {
    "rate": [("beats/minute", UCUM, "/min")],
    "mass": [("kg", UCUM, "kg"), ("lb", UCUM, "[lb_av]"), ("kg", None, None)],
    "temperature": [("°C", UCUM, "Cel")],
    "pressure": [("mmHg", UCUM, "mm[Hg]")],
}
QUANTITY_VALUES = [60, 72, 72.5, 99.4, 99.5, 99.6, 100, 100.0, 100.4, 100.5, 100.6, 101, 150, 0.5, 37, 37.5, 38.25]
PROBABILITIES = [5, 9.49, 9.5, 10, 10.0, 10.4, 10.5, 10.55, 50, 99.5, 100]
OBSERVATION_STATUSES = ["final", "final", "preliminary", "amended", "cancelled"]
ENCOUNTER_STATUSES = ["planned", "in-progress", "finished", "finished", "cancelled"]
VALUESET_PATHS = ["a", "a/sub", "a/sub/deeper", "ab", "b", "b/x"]


def _partial_date(rng: random.Random, years: list[int]) -> str:
    """A date of random precision: ``1970``, ``1970-03`` or ``1970-03-04``."""
    year = rng.choice(years)
    precision = rng.choice(["year", "month", "day", "day", "day"])
    month, day = rng.choice([1, 2, 3, 3, 3, 4, 12]), rng.choice([1, 3, 4, 4, 5, 28])
    if precision == "year":
        return f"{year}"
    if precision == "month":
        return f"{year}-{month:02d}"
    return f"{year}-{month:02d}-{day:02d}"


def _date_time(rng: random.Random) -> str:
    """A dateTime of random precision and zone (2020–2022, dense around March 2021)."""
    date = _partial_date(rng, [2020, 2021, 2021, 2022])
    if len(date) < 10 or rng.random() < 0.4:
        return date
    hour, minute = rng.choice([0, 10, 12, 23]), rng.choice([0, 30])
    zone = rng.choice(["Z", "Z", "+02:00", "-05:00"])
    seconds = rng.choice([":00", ":15.250", ""])
    return f"{date}T{hour:02d}:{minute:02d}{seconds or ':00'}{zone}"


def _meta(rng: random.Random, *, profiles: bool = False) -> dict:
    tags = [{"system": TAG_SYSTEM, "code": RUN}]
    if rng.random() < 0.3:
        tags.append({"system": FLAG_SYSTEM, "code": "vip"})
    if rng.random() < 0.2:
        tags.append({"system": FLAG_SYSTEM, "code": "research"})
    meta: dict = {"tag": tags}
    if profiles and rng.random() < 0.5:
        meta["profile"] = [rng.choice([PROFILE_A, PROFILE_B])]
    if rng.random() < 0.5:
        meta["security"] = [{"system": CONFIDENTIALITY, "code": rng.choice(["R", "N"])}]
    return meta


def _organizations(rng: random.Random) -> list[dict]:
    out = []
    for i, (name, alias, city, part_of) in enumerate(ORGANIZATIONS):
        org: dict = {"resourceType": "Organization", "id": f"{RUN}-org-{i}", "meta": _meta(rng), "name": name,
                     "address": [{"city": city}]}
        if alias:
            org["alias"] = [alias]
        if part_of is not None:
            org["partOf"] = {"reference": f"Organization/{RUN}-org-{part_of}"}
        out.append(org)
    return out


def _patient(rng: random.Random, i: int, n_patients: int) -> dict:
    patient: dict = {"resourceType": "Patient", "id": f"{RUN}-pat-{i:03d}", "meta": _meta(rng, profiles=True)}
    if rng.random() < 0.3:
        patient["text"] = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">Patient {i}</div>'}
    identifiers = [{"system": MRN, "value": f"MRN-{i:03d}", "type": {"text": "Medical record number"}}]
    if rng.random() < 0.5:
        identifiers.append({"system": NID, "value": f"MRN-{rng.randrange(n_patients):03d}", "type": {"text": "National ID"}})
    if rng.random() < 0.15:
        identifiers.append({"value": f"MRN-{rng.randrange(n_patients):03d}"})
    patient["identifier"] = identifiers
    if rng.random() < 0.8:
        patient["active"] = rng.random() < 0.7
    if rng.random() < 0.93:
        name: dict = {"family": rng.choice(FAMILIES), "given": rng.sample(GIVENS, rng.choice([1, 1, 2]))}
        if rng.random() < 0.1:
            name["prefix"] = ["Dr."]
        patient["name"] = [name]
    if rng.random() < 0.9:
        patient["gender"] = rng.choice(["male", "female", "female", "other", "unknown"])
    if rng.random() < 0.9:
        patient["birthDate"] = _partial_date(rng, BIRTH_YEARS)
    patient["telecom"] = [{"system": "phone", "value": f"+41-44-{i:03d}"},
                          {"system": "email", "value": f"patient{i}@example.org"}]
    if rng.random() < 0.85:
        patient["address"] = [{"line": [f"{i} Rue du Marché"], "city": rng.choice(CITIES), "postalCode": f"{8000 + i}"}]
    if rng.random() < 0.8:
        patient["managingOrganization"] = {"reference": f"Organization/{RUN}-org-{rng.randrange(len(ORGANIZATIONS))}"}
    if rng.random() < 0.3:
        patient["maritalStatus"] = {"text": "unknown"}
    return patient


def _observation(rng: random.Random, i: int, base: str, patients: list[dict], encounters: list[dict]) -> dict:
    codings, text, kind = rng.choice(CODES)
    code: dict = {"coding": [{k: v for k, v in (("system", s), ("code", c), ("display", d)) if v} for s, c, d in codings]}
    if text:
        code["text"] = text
    obs: dict = {"resourceType": "Observation", "id": f"{RUN}-obs-{i:03d}", "meta": _meta(rng),
                 "status": rng.choice(OBSERVATION_STATUSES), "code": code}
    if rng.random() < 0.95:
        target = f"Patient/{rng.choice(patients)['id']}"
        obs["subject"] = {"reference": f"{base}/{target}" if rng.random() < 0.1 else target}
    if rng.random() < 0.4:
        obs["encounter"] = {"reference": f"Encounter/{rng.choice(encounters)['id']}"}
    if rng.random() < 0.5:
        obs["performer"] = [{"reference": f"Organization/{RUN}-org-{rng.randrange(len(ORGANIZATIONS))}"}]
    effective = rng.random()
    if effective < 0.45:
        obs["effectiveDateTime"] = _date_time(rng)
    elif effective < 0.75:
        period = {"start": _date_time(rng), "end": _date_time(rng)}
        period = dict(sorted(period.items())) if period["start"] <= period["end"] else {"start": period["end"], "end": period["start"]}
        if rng.random() < 0.2:
            del period[rng.choice(["start", "end"])]
        obs["effectivePeriod"] = period
    elif effective < 0.85:
        obs["effectiveInstant"] = f"{_partial_date(rng, [2021])[:4]}-03-04T10:30:00.123Z"
    value = rng.random()
    if value < 0.85:
        unit, system, unit_code = rng.choice(UNITS[kind])
        quantity: dict = {"value": rng.choice(QUANTITY_VALUES), "unit": unit}
        if system:
            quantity |= {"system": system, "code": unit_code}
        obs["valueQuantity"] = quantity
    elif value < 0.93:
        obs["valueString"] = rng.choice(["Normal", "normal range", "Élevé"])
    return obs


def _encounter(rng: random.Random, i: int, patients: list[dict]) -> dict:
    start = _partial_date(rng, [2021])
    encounter: dict = {
        "resourceType": "Encounter", "id": f"{RUN}-enc-{i:02d}", "meta": _meta(rng),
        "status": rng.choice(ENCOUNTER_STATUSES),
        "class": {"system": ACT_CODE, "code": rng.choice(["AMB", "IMP", "EMER"])},
        "subject": {"reference": f"Patient/{rng.choice(patients)['id']}"},
        "period": {"start": start},
    }
    if rng.random() < 0.7:
        encounter["serviceProvider"] = {"reference": f"Organization/{RUN}-org-{rng.randrange(len(ORGANIZATIONS))}"}
    return encounter


def _risk_assessment(rng: random.Random, i: int, patients: list[dict]) -> dict:
    risk: dict = {"resourceType": "RiskAssessment", "id": f"{RUN}-risk-{i:02d}", "meta": _meta(rng), "status": "final",
                  "subject": {"reference": f"Patient/{rng.choice(patients)['id']}"}}
    predictions = rng.choice([0, 1, 1, 1, 2])
    if predictions:
        risk["prediction"] = [{"probabilityDecimal": rng.choice(PROBABILITIES)} for _ in range(predictions)]
    return risk


def _value_sets(rng: random.Random) -> list[dict]:
    urls = [f"{VS_BASE}/{path}" for path in VALUESET_PATHS] + [f"http://other.example.org/{RUN}/ValueSet/a"]
    return [
        {"resourceType": "ValueSet", "id": f"{RUN}-vs-{i}", "meta": _meta(rng), "url": url,
         "status": rng.choice(["active", "draft"])}
        for i, url in enumerate(urls)
    ]


def generate(base: str, seed: int = 1234) -> list[dict]:
    """The whole data set, in an order where references point at resources written before."""
    rng = random.Random(seed)
    organizations = _organizations(rng)
    patients = [_patient(rng, i, 60) for i in range(60)]
    encounters = [_encounter(rng, i, patients) for i in range(25)]
    observations = [_observation(rng, i, base, patients, encounters) for i in range(150)]
    risks = [_risk_assessment(rng, i, patients) for i in range(30)]
    return organizations + patients + encounters + observations + risks + _value_sets(rng)


# --------------------------------------------------------------------------- loading


@dataclass
class Dataset:
    """The loaded data set of one server: resources by type (as the server stored them)."""

    base: str
    by_type: dict[str, list[dict]] = field(default_factory=dict)

    def of(self, res_type: str) -> list[dict]:
        return self.by_type.get(res_type, [])

    def get(self, reference: str) -> dict | None:
        res_type, _, res_id = reference.rpartition("/")
        res_type = res_type.rpartition("/")[2]
        return next((r for r in self.of(res_type) if r["id"] == res_id), None)


_loaded: dict[tuple[str, str], Dataset] = {}
_lock = threading.Lock()


def load(server: Any) -> Dataset:
    """PUT the data set into ``server`` (a conftest ``Server``) once per test session (fixed ids).

    Keyed by database as well as URL: a later server may get the port of a stopped one.
    """
    key = (server.base, server.database.url)
    with _lock:
        if key not in _loaded:
            _loaded[key] = _load(server.base)
        return _loaded[key]


def _load(base: str) -> Dataset:
    dataset = Dataset(base)
    resources = generate(base)
    with httpx.Client(base_url=base, timeout=60) as client:
        for layer in _layers(resources):
            def put(resource: dict) -> dict:
                response = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
                assert response.status_code == 201, response.text
                return response.json()

            with ThreadPoolExecutor(max_workers=8) as pool:
                for stored in pool.map(put, layer):
                    dataset.by_type.setdefault(stored["resourceType"], []).append(stored)
    return dataset


def _layers(resources: list[dict]) -> Iterator[list[dict]]:
    """Resources grouped by type, in generation order (parallel PUTs within a group); a resource
    that refers to another of its own group goes to a later group (references must resolve)."""
    group: list[dict] = []
    for resource in resources:
        if group and group[-1]["resourceType"] != resource["resourceType"]:
            yield from _by_dependency(group)
            group = []
        group.append(resource)
    if group:
        yield from _by_dependency(group)


def _by_dependency(group: list[dict]) -> Iterator[list[dict]]:
    ids = {f"{r['resourceType']}/{r['id']}" for r in group}
    first = [r for r in group if (r.get("partOf") or {}).get("reference") not in ids]
    later = [r for r in group if r not in first]
    yield first
    if later:
        yield from _by_dependency(later) if len(later) < len(group) else iter([later])


# --------------------------------------------------------------------------- HTTP helpers


@dataclass
class Result:
    """Every page of a search, followed through its ``next`` links."""

    pages: list[dict]

    @property
    def entries(self) -> list[dict]:
        return [e for page in self.pages for e in page.get("entry", [])]

    def ids(self, mode: str = "match") -> list[str]:
        return [e["resource"]["id"] for e in self.entries if e["search"]["mode"] == mode]

    def refs(self, mode: str) -> set[str]:
        return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in self.entries if e["search"]["mode"] == mode}

    def resources(self, mode: str = "match") -> list[dict]:
        return [e["resource"] for e in self.entries if e["search"]["mode"] == mode]

    @property
    def total(self) -> int | None:
        return self.pages[0].get("total")


def link(bundle: dict, relation: str) -> str | None:
    return next((item["url"] for item in bundle.get("link", []) if item["relation"] == relation), None)


def search(client: httpx.Client, path: str, params: Iterable[tuple[str, str]] | dict, *,
           post: bool = False, headers: dict | None = None, max_pages: int = 50) -> Result:
    """Run a search (GET, or POST ``path/_search`` with a form body) and follow every ``next`` link."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    if post:
        url = f"{path.rstrip('/')}/_search"
        response = client.post(url, data=_form(pairs), headers=headers)
    else:
        response = client.get(path, params=pairs, headers=headers)
    assert response.status_code == 200, response.text
    pages = [response.json()]
    while (next_url := link(pages[-1], "next")) is not None:
        assert len(pages) < max_pages, "too many pages"
        response = client.get(next_url, headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
    for page in pages:
        assert page["resourceType"] == "Bundle" and page["type"] == "searchset"
        for entry in page.get("entry", []):
            assert entry["search"]["mode"] in ("match", "include"), entry
    return Result(pages)


def _form(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Pairs as an httpx form body (repeated names keep all their values)."""
    form: dict[str, list[str]] = {}
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    return form


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# --------------------------------------------------------------------------- reference implementation


def normalize(text: str) -> str:
    """Case- and accent-insensitive form: decomposed, combining marks dropped, lower case."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()


def date_range(text: str) -> tuple[datetime, datetime]:
    """A FHIR date/dateTime/instant as the half-open UTC range ``[low, high)`` it covers."""
    date, _, time = text.partition("T")
    parts = [int(p) for p in date.split("-")]
    if not time:
        if len(parts) == 1:
            low = datetime(parts[0], 1, 1, tzinfo=UTC)
            return low, low.replace(year=parts[0] + 1)
        if len(parts) == 2:
            low = datetime(parts[0], parts[1], 1, tzinfo=UTC)
            return low, (low.replace(month=parts[1] + 1) if parts[1] < 12 else low.replace(year=parts[0] + 1, month=1))
        low = datetime(parts[0], parts[1], parts[2], tzinfo=UTC)
        return low, low + timedelta(days=1)
    zone = "Z" if time.endswith("Z") else time[-6:] if time[-6] in "+-" else ""
    clock = time[: len(time) - len(zone)]
    offset = timedelta(0)
    if zone not in ("", "Z"):
        offset = (1 if zone[0] == "+" else -1) * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    pieces = clock.split(":")
    seconds, _, fraction = (pieces[2] if len(pieces) > 2 else "").partition(".")
    low = datetime(parts[0], parts[1], parts[2], int(pieces[0]), int(pieces[1]), int(seconds or 0),
                   int(fraction.ljust(6, "0")[:6]) if fraction else 0, tzinfo=UTC) - offset
    if fraction:
        step = timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    elif seconds:
        step = timedelta(seconds=1)
    else:
        step = timedelta(minutes=1)
    return low, low + step


def compare_dates(prefix: str, value: tuple[datetime, datetime], query: tuple[datetime, datetime]) -> bool:
    """The R4 rules for a resource range ``value`` against a search range ``query`` (both half-open)."""
    low, high = value
    q_low, q_high = query
    contained = low >= q_low and high <= q_high
    return {
        "eq": contained,
        "ne": not contained,
        "gt": high > q_high,
        "lt": low < q_low,
        "ge": high > q_high or contained,
        "le": low < q_low or contained,
        "sa": low >= q_high,
        "eb": high <= q_low,
    }[prefix]


def overlaps(value: tuple[datetime, datetime], low: datetime, high: datetime) -> bool:
    return value[0] < high and value[1] > low


def split_prefix(raw: str) -> tuple[str, str]:
    if raw[:2] in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap") and len(raw) > 2 and (raw[2].isdigit() or raw[2] in "-."):
        return raw[:2], raw[2:]
    return "eq", raw


def compare_numbers(prefix: str, value: Decimal, raw: str) -> bool:
    """Numbers: ``eq``/``ne`` against the implicit precision range of ``raw`` (``100`` = [99.5, 100.5)),
    the others against the value itself."""
    number = Decimal(raw)
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(exponent - 1)  # type: ignore[operator]
    inside = number - half <= value < number + half
    return {
        "eq": inside,
        "ne": not inside,
        "gt": value > number,
        "lt": value < number,
        "ge": value >= number,
        "le": value <= number,
        "sa": value > number,
        "eb": value < number,
        "ap": abs(value - number) <= abs(number) / 10,
    }[prefix]


def as_decimal(value: Any) -> Decimal:
    return Decimal(str(value))


# What each parameter of the data set selects, written out by hand from the R4 expressions.

def _human_name_strings(names: list[dict]) -> list[str]:
    """Each part of a HumanName, and the whole name (prefix given family suffix) as fhirfus indexes it."""
    out = []
    for name in names:
        family = [name["family"]] if "family" in name else []
        parts = [*name.get("prefix", []), *name.get("given", []), *family, *name.get("suffix", [])]
        out += [*parts, " ".join(parts)]
    return out


STRINGS: dict[tuple[str, str], Callable[[dict], list[str]]] = {
    ("Patient", "name"): lambda r: _human_name_strings(r.get("name", [])),
    ("Patient", "family"): lambda r: [n["family"] for n in r.get("name", []) if "family" in n],
    ("Patient", "given"): lambda r: [g for n in r.get("name", []) for g in n.get("given", [])],
    ("Patient", "address-city"): lambda r: [a["city"] for a in r.get("address", []) if "city" in a],
    ("Patient", "address"): lambda r: [v for a in r.get("address", []) for v in [*a.get("line", []), a.get("city"), a.get("postalCode")] if v],
    ("Organization", "name"): lambda r: [r["name"], *r.get("alias", [])],
    ("Observation", "value-string"): lambda r: [r["valueString"]] if "valueString" in r else [],
}

Token = tuple[str | None, str | None, str | None]   # system, code, texts searched by :text (joined by \n)


def _concept_tokens(concept: dict | None) -> list[Token]:
    if not concept:
        return []
    text = concept.get("text")
    return [(c.get("system"), c.get("code"), "\n".join(t for t in (text, c.get("display")) if t)) for c in concept.get("coding", [])]


TOKENS: dict[tuple[str, str], Callable[[dict], list[Token]]] = {
    ("Patient", "gender"): lambda r: [(None, r["gender"], None)] if "gender" in r else [],
    ("Patient", "active"): lambda r: [(None, str(r["active"]).lower(), None)] if "active" in r else [],
    ("Patient", "identifier"): lambda r: [(i.get("system"), i["value"], (i.get("type") or {}).get("text")) for i in r.get("identifier", [])],
    ("Patient", "phone"): lambda r: [(None, t["value"], None) for t in r.get("telecom", []) if t["system"] == "phone"],
    ("Patient", "email"): lambda r: [(None, t["value"], None) for t in r.get("telecom", []) if t["system"] == "email"],
    ("Observation", "code"): lambda r: _concept_tokens(r.get("code")),
    ("Observation", "status"): lambda r: [(None, r["status"], None)],
    ("Encounter", "class"): lambda r: [(r["class"]["system"], r["class"]["code"], None)],
    ("Encounter", "status"): lambda r: [(None, r["status"], None)],
}
for _type in ("Patient", "Observation", "Organization", "Encounter", "RiskAssessment", "ValueSet"):
    TOKENS[(_type, "_tag")] = lambda r: [(t.get("system"), t.get("code"), None) for t in r["meta"].get("tag", [])]
    TOKENS[(_type, "_security")] = lambda r: [(t.get("system"), t.get("code"), None) for t in r["meta"].get("security", [])]


def _effective(resource: dict) -> list[tuple[datetime, datetime]]:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in resource:
            return [date_range(resource[key])]
    period = resource.get("effectivePeriod")
    if period is None:
        return []
    return [(date_range(period["start"])[0] if "start" in period else UTC_MIN,
             date_range(period["end"])[1] if "end" in period else UTC_MAX)]


DATES: dict[tuple[str, str], Callable[[dict], list[tuple[datetime, datetime]]]] = {
    ("Patient", "birthdate"): lambda r: [date_range(r["birthDate"])] if "birthDate" in r else [],
    ("Observation", "date"): _effective,
    ("Encounter", "date"): lambda r: [(*date_range(r["period"]["start"])[0:1], UTC_MAX)],
}

QUANTITIES: dict[tuple[str, str], Callable[[dict], list[tuple[Decimal, str | None, str | None, str | None]]]] = {
    ("Observation", "value-quantity"): lambda r: [
        (as_decimal(q["value"]), q.get("system"), q.get("code"), q.get("unit")) for q in [r["valueQuantity"]]
    ] if "valueQuantity" in r else [],
}

NUMBERS: dict[tuple[str, str], Callable[[dict], list[Decimal]]] = {
    ("RiskAssessment", "probability"): lambda r: [as_decimal(p["probabilityDecimal"]) for p in r.get("prediction", [])],
}

REFERENCES: dict[tuple[str, str], Callable[[dict], list[str]]] = {
    ("Observation", "subject"): lambda r: [r["subject"]["reference"]] if "subject" in r else [],
    ("Observation", "patient"): lambda r: [r["subject"]["reference"]] if "subject" in r else [],
    ("Observation", "encounter"): lambda r: [r["encounter"]["reference"]] if "encounter" in r else [],
    ("Observation", "performer"): lambda r: [p["reference"] for p in r.get("performer", [])],
    ("Patient", "organization"): lambda r: [r["managingOrganization"]["reference"]] if "managingOrganization" in r else [],
    ("Encounter", "subject"): lambda r: [r["subject"]["reference"]],
    ("Encounter", "patient"): lambda r: [r["subject"]["reference"]],
    ("Encounter", "service-provider"): lambda r: [r["serviceProvider"]["reference"]] if "serviceProvider" in r else [],
    ("Organization", "partof"): lambda r: [r["partOf"]["reference"]] if "partOf" in r else [],
    ("RiskAssessment", "subject"): lambda r: [r["subject"]["reference"]],
}

URIS: dict[tuple[str, str], Callable[[dict], list[str]]] = {
    ("ValueSet", "url"): lambda r: [r["url"]],
}
for _type in ("Patient", "Observation", "Organization", "Encounter", "RiskAssessment", "ValueSet"):
    URIS[(_type, "_profile")] = lambda r: list(r["meta"].get("profile", []))


def relative(reference: str) -> str:
    """``http://host/fhir/Patient/1`` → ``Patient/1``."""
    return "/".join(reference.split("/")[-2:])


def ids(resources: Iterable[dict], keep: Callable[[dict], bool]) -> set[str]:
    return {r["id"] for r in resources if keep(r)}


def string_matches(values: list[str], raw: str, modifier: str | None) -> bool:
    if modifier == "exact":
        return raw in values
    if modifier == "contains":
        return any(normalize(raw) in normalize(v) for v in values)
    return any(normalize(v).startswith(normalize(raw)) for v in values)


def token_matches(tokens: list[Token], raw: str, modifier: str | None) -> bool:
    if modifier == "text":
        return any(normalize(line).startswith(normalize(raw)) for *_, text in tokens if text for line in text.split("\n"))
    if "|" not in raw:
        found = any(code == raw for _, code, _ in tokens)
    else:
        system, _, code = raw.partition("|")
        found = any((s == (system or None)) and (not code or c == code) for s, c, _ in tokens)
    return not found if modifier == "not" else found


def quantity_matches(quantities: list[tuple[Decimal, str | None, str | None, str | None]], raw: str) -> bool:
    number, *rest = raw.split("|")
    prefix, text = split_prefix(number)
    system, code = ([*rest, "", ""])[:2]
    return any(
        compare_numbers(prefix, value, text)
        and (not system or q_system == system)
        and (not code or q_code == code or (not system and unit == code))
        for value, q_system, q_code, unit in quantities
    )
