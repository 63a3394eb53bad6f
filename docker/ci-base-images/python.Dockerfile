# CI stand-in for python:3.11-slim-bookworm, built by .ci/prepare-base-images on a
# machine with no image registry. Debian bookworm's own python3 is CPython 3.11; shims
# in /usr/local/bin give it the official image's names (python3.11, python3, python,
# pip, pip3), so the project's Dockerfiles build on it unchanged. Never pushed anywhere.
FROM debian:bookworm-slim

# Bookworm's CPython is 3.11.2; the official image carries the latest 3.11.x, and a few locked
# packages (for example soupsieve 4.x) declare Requires-Python >=3.11.5. Patch releases only
# fix bugs, so the stand-in lets pip install them anyway.
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHON_VERSION=3.11 \
    PIP_IGNORE_REQUIRES_PYTHON=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 # the official image's pip installs system-wide; Debian marks its Python as externally managed
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && for name in python3.11 python3 python; do ln -sf /usr/bin/python3.11 /usr/local/bin/$name; done \
 && for name in pip pip3 pip3.11; do printf '#!/bin/sh\nexec /usr/bin/python3.11 -m pip "$@"\n' > /usr/local/bin/$name \
      && chmod 755 /usr/local/bin/$name; done \
 && python3.11 --version && pip --version

# The CI machine reaches PyPI through a TLS-inspecting proxy whose CA is only in the
# host's bundle (a CI-only image, so that is fair). Kept also where update-ca-certificates
# looks, so a later `apt-get install ca-certificates` does not drop it.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY ca-certificates.crt /usr/local/share/ca-certificates/ci-host-bundle.crt

CMD ["python3"]
