"""The image runtime's only contact with images: a few buildah calls, on local storage only (never a pull)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from .plan import ImageConfig

WORKING_CONTAINER_PREFIX = "finetune-sandbox-"


class BuildahError(Exception):
    pass


@dataclass
class WorkingContainer:
    name: str
    rootfs: str
    config: ImageConfig


class Buildah:
    """The few buildah calls the image runtime makes; images are only ever read from local storage."""

    def __init__(self, binary: str = "buildah") -> None:
        self.binary = binary

    async def _run(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise BuildahError(err.decode(errors="replace").strip() or f"buildah {args[0]} failed")
        return out.decode()

    async def image_config(self, image: str) -> ImageConfig | None:
        """The image's config, or None when it is not in local storage."""
        try:
            return ImageConfig.from_inspect(json.loads(await self._run("inspect", "--type", "image", image)))
        except BuildahError:
            return None

    async def create(self, image: str, name: str) -> WorkingContainer:
        """A working container of `image` (never pulled), mounted."""
        try:
            await self._run("from", "--pull-never", "--quiet", "--name", name, image)
            config = ImageConfig.from_inspect(json.loads(await self._run("inspect", "--type", "container", name)))
            rootfs = (await self._run("mount", name)).strip()
        except BaseException:
            # Also when cancelled half-way: no working container is left behind.
            await asyncio.shield(self.remove(name))
            raise
        return WorkingContainer(name, rootfs, config)

    async def remove(self, name: str) -> None:
        try:
            await self._run("rm", name)
        except BuildahError:
            pass
