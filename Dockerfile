# One image for every gateway service: `llmgw run <service>` picks which.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY config ./config
COPY topics.yaml ./
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENTRYPOINT ["llmgw"]
