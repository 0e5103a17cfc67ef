# The chart's bundled Pushgateway for the tests (nothing can be pulled from quay.io here):
# Debian's prometheus-pushgateway on the same Debian base as the product's images, started
# like the upstream image (uid 65534, the chart passes --web.listen-address).
# Build:  buildah bud -f devcluster/env/images/pushgateway.Dockerfile --build-arg BASE=... .
ARG BASE=docker.io/library/debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
FROM ${BASE}
# policy-rc.d: the package's postinst must not start a daemon inside the build
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d \
    && chmod 0755 /usr/sbin/policy-rc.d \
    && apt-get update \
    && apt-get install -y --no-install-recommends prometheus-pushgateway=1.5.1-2+b5 \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
USER 65534:65534
EXPOSE 9091
ENTRYPOINT ["/usr/bin/prometheus-pushgateway"]
