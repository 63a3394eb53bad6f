# CI stand-in for python:3.11-slim-bookworm, built by .ci/prepare-base-images on a machine with
# no image registry. Like the official image it is bookworm with a CPython 3.11 built from
# source in /usr/local: here the CI machine's own CPython 3.11 build (a bookworm build, staged
# by the script into cpython/; Debian's python3 is 3.11.2, older than what the project and its
# locked packages need: tarfile's extraction filters, Requires-Python >=3.11.5). The Debian
# libraries it links against are installed from Debian's packages (runtime-packages.txt, found
# with ldd + dpkg -S), pip comes from ensurepip. Never pushed anywhere.
FROM debian:bookworm-slim

ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHON_VERSION=3.11

COPY runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates netbase tzdata $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt

COPY cpython/ /usr/local/
RUN ldconfig \
 && for name in python3 python; do ln -sf python3.11 /usr/local/bin/$name; done \
 && python3.11 -m compileall -q -j 0 /usr/local/lib/python3.11 >/dev/null || true \
 && python3.11 -m ensurepip --default-pip >/dev/null \
 && ln -sf pip3 /usr/local/bin/pip \
 && python3.11 -c 'import ssl, sqlite3, lzma, bz2, zlib, ctypes, readline, tarfile; assert hasattr(tarfile, "data_filter")' \
 && python3.11 --version && pip --version

# The CI machine reaches PyPI through a TLS-inspecting proxy whose CA is only in the
# host's bundle (a CI-only image, so that is fair). Kept also where update-ca-certificates
# looks, so a later `apt-get install ca-certificates` does not drop it; pip (which otherwise
# trusts its own certifi bundle) is pointed at it as on the host.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY ca-certificates.crt /usr/local/share/ca-certificates/ci-host-bundle.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt

CMD ["python3"]
