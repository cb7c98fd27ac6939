# Keel worker image: `docker build -t keel .` then `docker run keel` (runs `keel worker`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system keel \
    && useradd --system --gid keel --create-home --home-dir /home/keel keel \
    && mkdir -p /var/lib/keel \
    && chown keel:keel /var/lib/keel

WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY keel/ ./keel/
# The pinned, hashed runtime set first, then Keel itself without resolving again.
RUN pip install --no-cache-dir --require-hashes -r requirements.lock \
    && pip install --no-cache-dir --no-deps . \
    && rm -rf /src/build /src/*.egg-info

# Keel's local state (side-effect record, dev data); compose mounts a volume here.
ENV KEEL_DATA_DIR=/var/lib/keel

USER keel
WORKDIR /home/keel

CMD ["keel", "worker"]
