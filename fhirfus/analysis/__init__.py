"""The de-identified analysis export of a cohort: views → de-identification → dataset, statistics,
data dictionary and report, as a CLI command or an asynchronous ``$analysis-export`` job.
"""
