"""``QuestionnaireResponse/$extract``: the resources a response implies (TWSTRS: score Observations).

Answers a ``transaction`` Bundle the client may post back (SDC convention); nothing is stored here
(stored responses get their scores on write, see ``fhirfus.domain.derived``).
"""

from __future__ import annotations

import uuid
from typing import Any

from fhirfus.auth.access import Access
from fhirfus.domain import twstrs
from fhirfus.errors import BusinessRuleViolation, InvalidRequest
from fhirfus.fhir.validation import parameter_list
from fhirfus.interactions import crud
from fhirfus.store.repository import Store


def _response_of(body: Any) -> dict:
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for parameter in parameter_list(body):
            if isinstance(parameter, dict) and parameter.get("name") == "questionnaire-response":
                return parameter.get("resource")  # type: ignore[return-value]
        raise InvalidRequest("Parameters need a 'questionnaire-response' resource", "Parameters.parameter")
    return body


def extract(caller: Access, body: Any) -> dict:
    """The score Observations of a response, as a transaction Bundle (a read-level operation on
    QuestionnaireResponse: the caller needs that permission even though nothing stored is read)."""
    caller.require("QuestionnaireResponse", "r")
    response = crud.accept(caller, _response_of(body), "QuestionnaireResponse")
    if not twstrs.is_twstrs_response(response):
        raise BusinessRuleViolation(
            f"No extraction rules for questionnaire '{response.get('questionnaire')}'",
            "QuestionnaireResponse.questionnaire",
        )
    reference = f"QuestionnaireResponse/{response['id']}" if response.get("id") else f"urn:uuid:{uuid.uuid4()}"
    observations = twstrs.score_observations(response, reference)
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": o, "request": {"method": "POST", "url": "Observation"}}
            for o in observations
        ],
    }


def extract_stored(store: Store, caller: Access, response_id: str) -> dict:
    return extract(caller, crud.read(store, caller, "QuestionnaireResponse", response_id).content)
