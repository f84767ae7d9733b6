# CPU image (default):  docker build -t assayfew .
# CUDA image:           docker build --build-arg TORCH_VARIANT=cu128 -t assayfew:cuda .
#                       docker run --gpus all ... assayfew:cuda train --device cuda ...
# TORCH_VARIANT names a wheel index of download.pytorch.org/whl (cpu, cu126, cu128, ...); torch stays pinned to
# the version in pyproject.toml (torch==2.13.0 matches 2.13.0+cpu and 2.13.0+cu128 alike). The CUDA wheels
# bring their own CUDA libraries: the host needs only an NVIDIA driver and the NVIDIA container toolkit.
FROM python:3.11-slim

ARG TORCH_VARIANT=cpu

# System libraries RDKit's drawing code needs (Cairo/FreeType/X render), plus git for version stamps.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libxrender1 libxext6 libexpat1 libfreetype6 libcairo2 git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/assayfew
COPY . .
RUN pip install --no-cache-dir --extra-index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" -e .

# Inside the container the dashboard must listen on all interfaces for a published port (-p 8501:8501) to reach
# it; outside a container `assayfew app` keeps binding 127.0.0.1 (this variable is set only here).
ENV ASSAYFEW_APP_HOST=0.0.0.0
EXPOSE 8501
ENTRYPOINT ["assayfew"]
CMD ["predict", "--example"]
