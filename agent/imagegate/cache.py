"""The gate's cache: per-layer results and per-image reports, in SQLite, persisted across restarts.

Keys carry the fingerprints they depend on, so a change invalidates by construction:
  layer:  <rules fingerprint> <scan limits> <layer blob digest>
  image:  <rules fingerprint> <advisory db fingerprint> <image digest> <spec digest>
`purge_stale()` deletes rows of older fingerprints at once instead of letting them age out. The
policy is not in any key: a verdict is recomputed from the cached report on every lookup (cheap),
so a policy reload applies to the next container without a rescan.

Bounded: at most max_layers / max_images rows (least recently used go first) and small in-memory
LRUs in front of SQLite for the hot path. A corrupt database file is moved aside, never fatal.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import zlib
from collections import OrderedDict

import orjson

from agent.imagegate.model import ImageReport, LayerResult

log = logging.getLogger("nodewarden.imagegate.cache")


class Cache:
    def __init__(self, path: str | None, max_layers: int = 20000, max_images: int = 20000, mem_images: int = 2048):
        self.path = path or ":memory:"
        self.max_layers, self.max_images = max_layers, max_images
        self._lock = threading.Lock()
        self._mem_images: OrderedDict[str, ImageReport] = OrderedDict()
        self._mem_layers: OrderedDict[str, LayerResult] = OrderedDict()
        self._mem_max = mem_images
        self._writes = 0
        self.stats = {"image_hits": 0, "image_misses": 0, "layer_hits": 0, "layer_misses": 0}
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            return self._init(sqlite3.connect(self.path, check_same_thread=False, timeout=5))
        except sqlite3.DatabaseError as e:
            if self.path == ":memory:":
                raise
            aside = f"{self.path}.corrupt-{int(time.time())}"
            log.warning("image cache %s unusable (%s): moved to %s, starting empty", self.path, e, aside)
            os.replace(self.path, aside)
            return self._init(sqlite3.connect(self.path, check_same_thread=False, timeout=5))

    @staticmethod
    def _init(db: sqlite3.Connection) -> sqlite3.Connection:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS layers (key TEXT PRIMARY KEY, data BLOB, paths BLOB, used REAL)")
        db.execute("CREATE TABLE IF NOT EXISTS images (key TEXT PRIMARY KEY, data BLOB, used REAL)")
        db.execute("CREATE INDEX IF NOT EXISTS layers_used ON layers(used)")
        db.execute("CREATE INDEX IF NOT EXISTS images_used ON images(used)")
        db.execute("SELECT count(*) FROM layers").fetchone()  # a corrupt file fails here, not later
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- layers -----------------------------------------------------------------------------------

    def get_layer(self, key: str) -> LayerResult | None:
        with self._lock:
            res = self._mem_layers.get(key)
            if res is not None:
                self._mem_layers.move_to_end(key)
                self.stats["layer_hits"] += 1
                return res
            row = self._db.execute("SELECT data, paths FROM layers WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.stats["layer_misses"] += 1
                return None
            self._db.execute("UPDATE layers SET used = ? WHERE key = ?", (time.time(), key))
            self.stats["layer_hits"] += 1
        try:
            names = zlib.decompress(row[1]).decode().split("\n") if row[1] else []
            paths = {n for n in names if n and not n.endswith("/")}
            dirs = {n[:-1] for n in names if n.endswith("/")}
            res = LayerResult.from_dict(orjson.loads(zlib.decompress(row[0])), paths, dirs)
        except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeError):
            return None
        self._remember(self._mem_layers, key, res, 64)
        return res

    def put_layer(self, key: str, res: LayerResult) -> None:
        if not res.complete:
            return
        data = zlib.compress(orjson.dumps(res.to_dict()), 1)
        # Directories marked by a trailing "/" (a normalized path never ends in one).
        names = sorted(res.paths) + sorted(d + "/" for d in res.dirs)
        paths = zlib.compress("\n".join(names).encode(), 1)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO layers VALUES (?, ?, ?, ?)", (key, data, paths, time.time()))
            self._after_write()
        self._remember(self._mem_layers, key, res, 64)

    # --- images -----------------------------------------------------------------------------------

    def get_image(self, key: str) -> ImageReport | None:
        with self._lock:
            rep = self._mem_images.get(key)
            if rep is not None:
                self._mem_images.move_to_end(key)
                self.stats["image_hits"] += 1
                return rep
            row = self._db.execute("SELECT data FROM images WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.stats["image_misses"] += 1
                return None
            self._db.execute("UPDATE images SET used = ? WHERE key = ?", (time.time(), key))
            self.stats["image_hits"] += 1
        try:
            rep = ImageReport.from_dict(orjson.loads(zlib.decompress(row[0])))
        except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        self._remember(self._mem_images, key, rep, self._mem_max)
        return rep

    def put_image(self, key: str, rep: ImageReport) -> None:
        data = zlib.compress(orjson.dumps(rep.to_dict()), 1)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO images VALUES (?, ?, ?)", (key, data, time.time()))
            self._after_write()
        self._remember(self._mem_images, key, rep, self._mem_max)

    # --- housekeeping -----------------------------------------------------------------------------

    def _remember(self, mem: OrderedDict, key: str, value, cap: int) -> None:
        with self._lock:
            mem[key] = value
            mem.move_to_end(key)
            while len(mem) > cap:
                mem.popitem(last=False)

    def _after_write(self) -> None:
        """Lock held. Commit, and trim the tables now and then."""
        self._writes += 1
        if self._writes % 256 == 0:
            for table, cap in (("layers", self.max_layers), ("images", self.max_images)):
                self._db.execute(
                    f"DELETE FROM {table} WHERE key IN (SELECT key FROM {table} ORDER BY used DESC LIMIT -1 OFFSET ?)",
                    (cap,),
                )
        self._db.commit()

    def purge_stale(self, layer_prefix: str, image_prefix: str) -> int:
        """Delete every row whose key does not start with the current fingerprints."""
        with self._lock:
            n = self._db.execute(
                "DELETE FROM layers WHERE substr(key, 1, ?) != ?", (len(layer_prefix), layer_prefix)
            ).rowcount
            n += self._db.execute(
                "DELETE FROM images WHERE substr(key, 1, ?) != ?", (len(image_prefix), image_prefix)
            ).rowcount
            self._db.commit()
            for mem, prefix in ((self._mem_layers, layer_prefix), (self._mem_images, image_prefix)):
                for k in [k for k in mem if not k.startswith(prefix)]:
                    del mem[k]
        return n

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {t: self._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("layers", "images")}
