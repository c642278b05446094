"""Getting the Bento and its models onto every node that runs a replica.

A replica on another node cannot read the driver's BentoML store, and that node's own
store usually lacks the Bento. Two ways in, both ending in the same thing on the node: a
self-contained Bento folder, its models in ``models/`` inside it, which ``bentoml.load``
serves from as it does in BentoML's own containers. Replicas on one node share one copy,
fetched once under a file lock into the node's bentoml-ray cache.

- **Shipped from the driver's node (the default).** ``deployment()`` lays the Bento out
  as such a folder (hard links into the store: nothing is copied on one disk). When
  ``serve.run`` sends the deployments to the cluster, a ``BentoDepot`` actor is started
  on the driver's node; replicas on other nodes stream the folder from it, replicas on
  the driver's node use it in place. Ray's runtime_env packages were the other candidate,
  but Serve does not upload a deployment's local ``py_modules`` (only the driver's
  job-level ``working_dir`` reaches replicas) and its GCS caps a package at 512 MiB.
- **From a URI** (``bento_uri``: ``s3://``, ``gs://``, ``file://``, a path; any fsspec
  protocol, as ``bentoml export`` / ``bentoml import`` use): each node downloads the
  archive itself. Gigabytes then do not pass through the driver's node, and a cluster can
  run a Bento that no driver has (``serve deploy`` of an exported config).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import bentoml

from .._errors import BentoNotFound, InvalidArgument

#: Bytes per call when a replica streams a Bento from a ``BentoDepot``.
_CHUNK = 16 << 20

#: Where ``BentoDepot`` actors live, out of the way of the user's named actors.
DEPOT_NAMESPACE = "bentoml_ray"


def cache_root() -> Path:
    """This node's bentoml-ray cache: ``BENTOML_RAY_CACHE_DIR``, else under the temp dir."""
    configured = os.environ.get("BENTOML_RAY_CACHE_DIR")
    if configured:
        return Path(configured)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"bentoml-ray-{uid}"


def package_name(tag: bentoml.Tag) -> str:
    """The folder name of a Bento laid out for shipping: one per tag, recognisable."""
    return "bentoml_ray_bento_" + hashlib.sha256(str(tag).encode()).hexdigest()[:20]


def package_for_shipping(bento: bentoml.Bento) -> Path:
    """The Bento laid out as a self-contained folder in this node's cache.

    Built once per Bento version (versions are immutable) and reused by later calls.
    """
    from .._bentoml_internals import bento_model_paths

    name = package_name(bento.tag)
    final = cache_root() / "packages" / name
    if (final / "bento.yaml").is_file():
        return final
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=_mkdir(final.parent)))
    try:
        layout = staging / name
        _link_tree(Path(str(bento.path)), layout)
        for model_tag, path in bento_model_paths(bento).items():
            _link_tree(path, layout / "models" / model_tag.name / str(model_tag.version))
        try:
            layout.rename(final)
        except OSError:  # another process finished first; its copy is the same
            if not (final / "bento.yaml").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


class BentoDepot:
    """A Ray actor on the driver's node that hands its Bento folders to other nodes.

    One per node that deployed (named after the node, detached so replicas that start
    after the driver exits can still fetch). It reads the folder from disk per request,
    so it holds no Bento in memory.
    """

    def archive_size(self, package: str) -> int:
        """Size of ``package`` as a tar, built next to it on first request."""
        return self._archive(package).stat().st_size

    def read(self, package: str, offset: int, length: int) -> bytes:
        with self._archive(package).open("rb") as archive:
            archive.seek(offset)
            return archive.read(length)

    def _archive(self, package: str) -> Path:
        folder = Path(package)
        if not folder.name.startswith("bentoml_ray_bento_") or not folder.is_dir():
            raise FileNotFoundError(f"{package} is not a Bento folder of bentoml-ray")
        archive = folder.with_name(folder.name + ".tar")
        if not archive.is_file():
            partial = Path(tempfile.mkstemp(prefix=".tar-", dir=folder.parent)[1])
            with tarfile.open(partial, "w") as tar:
                tar.add(folder, arcname=folder.name)
            partial.rename(archive)
        return archive


def start_depot() -> str:
    """Start (or find) this node's ``BentoDepot``; returns the node id, for replicas."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    depot = (
        ray.remote(BentoDepot)
        .options(  # type: ignore[attr-defined]
            name=f"depot-{node_id}",
            namespace=DEPOT_NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=8,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        )
        .remote()
    )
    ray.get(depot.__ray_ready__.remote())  # type: ignore[union-attr]
    return node_id


def fetch_shipped(package: str, depot_node: str, tag: bentoml.Tag) -> Path:
    """This node's copy of a Bento shipped from ``depot_node``, streamed once if needed."""
    import ray

    if ray.get_runtime_context().get_node_id() == depot_node:
        return Path(package)  # the driver's node: the folder is right here
    cached = _cached(tag)
    if cached is not None:
        return cached

    def download(target: Path) -> None:
        try:
            depot = ray.get_actor(f"depot-{depot_node}", namespace=DEPOT_NAMESPACE)
            size = ray.get(depot.archive_size.remote(package))
            with target.open("wb") as sink:
                for offset in range(0, size, _CHUNK):
                    sink.write(ray.get(depot.read.remote(package, offset, _CHUNK)))
        except (ValueError, ray.exceptions.RayError) as exc:
            raise BentoNotFound(
                f"Bento {tag} could not be shipped from node {depot_node} ({exc}). Its node "
                "must stay in the cluster and hold the folder (a Ray Client driver's does "
                "not): give bento_uri= to fetch it from a URI instead."
            ) from exc

    return _fetch_once(f"depot {depot_node[:12]}", tag, download)


def fetch_bento(uri: str, tag: bentoml.Tag | None) -> Path:
    """This node's copy of the Bento archive at ``uri``, downloaded once if needed.

    ``tag`` is the exact Bento expected, once the driver knows it; replicas pass it so a
    cached copy is used without touching the URI, and an archive that was replaced by
    another Bento is refused rather than served.
    """
    cached = _cached(tag)
    if cached is not None:
        return cached
    local = _local_folder(uri)
    if local is not None:  # a folder on a shared filesystem: nothing to copy
        _checked(local, uri, tag)
        return local
    return _fetch_once(uri, tag, lambda target: _download(uri, target))


def _fetch_once(origin: str, tag: bentoml.Tag | None, download: Callable[[Path], None]) -> Path:
    """Download an archive with ``download`` and unpack it into this node's cache, once.

    The file lock makes the replicas of one node wait for the first one's copy.
    """
    import filelock

    downloads = _mkdir(cache_root() / "downloads")
    key = hashlib.sha256(origin.encode() + str(tag).encode()).hexdigest()[:20]
    with filelock.FileLock(str(downloads / f"{key}.lock")):
        cached = _cached(tag)  # another replica may have fetched it meanwhile
        if cached is not None:
            return cached
        staging = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=downloads))
        try:
            archive = staging / "archive"
            download(archive)
            unpacked = _unpack(archive, staging / "bento", origin)
            found = _checked(unpacked, origin, tag)
            final = cache_root() / "bentos" / found.name / str(found.version)
            if not (final / "bento.yaml").is_file():
                _mkdir(final.parent)
                shutil.rmtree(final, ignore_errors=True)
                unpacked.rename(final)
            return final
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _cached(tag: bentoml.Tag | None) -> Path | None:
    if tag is None or tag.version in (None, "latest"):
        return None
    cached = cache_root() / "bentos" / tag.name / str(tag.version)
    return cached if (cached / "bento.yaml").is_file() else None


def bento_tag_at(path: Path) -> bentoml.Tag:
    """The tag of the Bento folder at ``path``."""
    return bentoml.Bento.from_path(str(path)).tag


def _checked(path: Path, origin: str, tag: bentoml.Tag | None) -> bentoml.Tag:
    """The tag of the Bento at ``path``, which must be ``tag`` (any version if unpinned)."""
    found = bento_tag_at(path)
    if tag is not None and (
        found.name != tag.name or tag.version not in (None, "latest", found.version)
    ):
        raise BentoNotFound(f"{origin} holds Bento {found}, not {tag}.")
    return found


def _local_folder(uri: str) -> Path | None:
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
    if "://" in uri and not uri.startswith("file://"):
        return None
    return path if (path / "bento.yaml").is_file() else None


def _download(uri: str, target: Path) -> None:
    import fsspec

    try:
        with fsspec.open(uri, "rb") as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    except (ImportError, ValueError) as exc:  # a protocol whose fsspec plugin is missing
        raise InvalidArgument(f"bento_uri {uri!r} cannot be read here: {exc}") from exc
    except FileNotFoundError as exc:
        raise BentoNotFound(f"bento_uri {uri!r}: no such archive ({exc}).") from exc


def _unpack(archive: Path, target: Path, origin: str) -> Path:
    """Unpack a ``bentoml export`` archive (.bento, .tar.gz, .tar, .zip) into ``target``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(target)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tarred:
            tarred.extractall(target, filter="data")
    else:
        raise InvalidArgument(
            f"{origin} is not an archive made by `bentoml export` (.bento, .tar.gz, .tar or .zip)."
        )
    if (target / "bento.yaml").is_file():
        return target
    inner = [p for p in target.iterdir() if (p / "bento.yaml").is_file()]
    if len(inner) == 1:
        return inner[0]
    raise InvalidArgument(f"{origin} holds no bento.yaml at its top.")


def _link_tree(source: Path, target: Path) -> None:
    shutil.copytree(
        source,
        target,
        copy_function=_link_or_copy,
        dirs_exist_ok=True,  # a Bento that already bundles some of its models
    )


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(source, target)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
