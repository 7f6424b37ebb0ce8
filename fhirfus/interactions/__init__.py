"""The FHIR REST interactions: create, read, vread, update, patch, delete, conditional forms,
history, search, batch and transaction, the CapabilityStatement. HTTP-free: ``fhirfus.api`` maps
requests onto these functions, which take the caller explicitly and raise typed ``FhirError``s.
"""
