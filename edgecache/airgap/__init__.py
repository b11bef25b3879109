"""Moving images into a site that cannot reach the registries: warm, export, import.

- `warm` fills a cache ahead of need by pulling through edgecache itself (a running service, or
  the same app started in-process), so content enters the cache by one path only.
- `export` writes cached images as a zstd-compressed tar of an OCI image layout: a format skopeo,
  oras and containerd read, built from the store without going through the service.
- `import` takes such a bundle (or a plain OCI layout tar, e.g. from `skopeo copy
  oci-archive:`), verifies every byte and every manifest closure before anything becomes
  visible, then publishes: a hostile or broken bundle leaves the cache as it was.
"""
