FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fhirfus ./fhirfus
COPY migrations ./migrations
COPY mappings ./mappings
RUN pip install --no-cache-dir -e .
EXPOSE 8000
CMD ["fhirfus", "serve", "--host", "0.0.0.0", "--port", "8000"]
