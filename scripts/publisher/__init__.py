"""Publish the service image to a container registry: any registry, or AWS ECR with --ecr.

    scripts/publish --registry ghcr.io --repository coffeemesh/orders
    scripts/publish --ecr                       # region and account from the AWS config
    scripts/publish --registry 127.0.0.1:5000 --insecure --image localhost/orders:dev

Builds the image from the Containerfile's production target (or takes one already built,
--image), tags it ``<version>`` (``[project] version`` in pyproject.toml) and
``sha-<7-char commit>``, sets the OCI labels, pushes the commit tag and then the version tag,
and prints the pinned reference ``REGISTRY/REPOSITORY@sha256:...`` on stdout; progress goes
to stderr. An --image that already carries this version's labels (published elsewhere) is
tagged as it is, so its digest stays the same; any other image is relabelled.

It refuses to publish a version that the registry already has and a work tree with
uncommitted changes, unless told otherwise (--force; --allow-dirty). From a dirty tree the
commit tag and the revision label carry a ``-dirty`` suffix.

Works with Docker or Podman: --engine, else CONTAINER_ENGINE, else the first of docker and
podman that answers. Podman needs skopeo to look up tags.

Exit status: 0 published; 1 error; 2 usage or configuration error; 3 refused, the version
is already published; 4 refused, the work tree has uncommitted changes.
"""

# The modules, each one concept: errors (the exit statuses), programs (running git, the engine,
# aws, skopeo), project (what is published: pyproject.toml and git), engine (docker or
# podman), registry (targets, lookups, sorting their answers), ecr (AWS), image (build, label,
# push), cli (the command line and the whole run). scripts/publish is the command.
