"""kube-vip manifests: render one from a kubevipd config, or import one into a config."""

from kubevipd.manifest.importer import Imported, ManifestImportError, import_manifest, to_yaml
from kubevipd.manifest.render import ManifestError, Rendered, RenderOptions, dump, image_ref, render

__all__ = [
    "Imported",
    "ManifestError",
    "ManifestImportError",
    "RenderOptions",
    "Rendered",
    "dump",
    "image_ref",
    "import_manifest",
    "render",
    "to_yaml",
]
