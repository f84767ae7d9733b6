FROM python:3.11-slim

# System libraries RDKit's drawing code needs (Cairo/FreeType/X render), plus git for version stamps.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libxrender1 libxext6 libexpat1 libfreetype6 libcairo2 git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/assayfew
COPY . .
# torch is pinned to the CPU build in pyproject.toml (torch==2.13.0).
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -e .

EXPOSE 8501
ENTRYPOINT ["assayfew"]
CMD ["predict", "--example"]
