"""Developer tooling: nothing here runs in production or is shipped in the image.

:mod:`tools.config_docs` generates the configuration reference (README table, ``.env.example``,
compose docs) from :mod:`sentiq.settings`; :mod:`tools.tiny_models` builds tiny random BERT model
folders for the tests, the benchmarks and the chaos run.
"""
