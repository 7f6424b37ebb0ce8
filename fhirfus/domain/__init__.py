"""The clinical domain: TWSTRS scoring and questionnaire checks, MRgFUS plausibility rules, the
guide's profiles, derived score Observations, the guide's conformance resources put to work, and
the synthetic cohorts of the demo and the tests.
"""
