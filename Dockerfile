# sagebrush as a SageMaker inference container: one static binary in an otherwise empty image.
#
#   docker build -t sagebrush .     builds from source in a Rust image (needs a registry to pull it,
#                                   and BuildKit: the legacy builder would also build `prebuilt`)
#   scripts/image                   builds the binary on this machine and assembles the same image
#                                   from it (target `prebuilt`); nothing is pulled
#
# The image holds /sagebrush (statically linked), /etc/ssl/certs/ca-certificates.crt (HTTPS, S3),
# /licenses, and an empty /tmp (unpacked archives, Hub downloads, compiled guests).

ARG RUST_IMAGE=rust:1.95-bookworm

# What every variant shares. SageMaker passes the port in SAGEMAKER_BIND_TO_PORT when the image
# carries this label; it runs `docker run IMAGE serve` and the exec-form entry point makes
# sagebrush PID 1, so SIGTERM reaches the server and drains in-flight requests.
FROM scratch AS base
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.title=sagebrush \
      org.opencontainers.image.description="SageMaker-compatible Hugging Face model server" \
      org.opencontainers.image.licenses=Apache-2.0
ENV HOME=/tmp \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Not root. /opt/ml/model must be readable by others (SageMaker and `tar` keep 0644/0755).
USER 65532:65532
ENTRYPOINT ["/sagebrush"]
CMD ["serve"]

# scripts/image: the file system it staged (context: its staging directory).
FROM base AS prebuilt
COPY rootfs/ /

# From source: the static binary and the same file system, by the same script.
FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/image --rootfs /rootfs

FROM base AS image
COPY --from=build /rootfs/ /
