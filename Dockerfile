# The fhirfus server image (docker-compose.yml runs it beside PostgreSQL). Everything the server
# reads at run time (migrations, the guide, mappings, console templates) is package data of
# `fhirfus`, so the package is all the image copies. tests/system/test_compose.py runs these commands
# without Docker; the image build itself needs a Docker engine.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fhirfus ./fhirfus
RUN pip install --no-cache-dir .
EXPOSE 8000
# `fhirfus serve` applies pending migrations, then serves http://0.0.0.0:8000/fhir
CMD ["fhirfus", "serve", "--host", "0.0.0.0", "--port", "8000"]
