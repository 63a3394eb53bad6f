# CI stand-in for python:3.11-slim-bookworm, built by .ci/prepare-base-images on a
# machine with no image registry. Debian bookworm's own python3 is CPython 3.11; shims
# in /usr/local/bin give it the official image's names (python3.11, python3, python,
# pip, pip3), so the project's Dockerfiles build on it unchanged. Never pushed anywhere.
FROM debian:bookworm-slim

ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHON_VERSION=3.11

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
