# `zsc webui` (the client package with its webui extra) in a small Python image; no model, no GPU.
# `docker compose --profile webui up webui` serves it on :7860, talking to the triton service over gRPC.
FROM python:3.11-slim

COPY client /opt/zero-shot-triton/client
RUN pip install --no-cache-dir "/opt/zero-shot-triton/client[webui]"
USER nobody

EXPOSE 7860
CMD ["zsc", "webui", "--triton", "triton:8001", "--host", "0.0.0.0", "--port", "7860"]
