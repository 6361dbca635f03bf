"""Archive stores: a local folder, or S3-compatible object storage (DigitalOcean Spaces)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")


def _checked(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/") or not set(key) <= KEY_CHARS:
        raise ValueError(f"bad archive key {key!r}")
    return key


class FolderArchiveStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / _checked(key)

    async def put(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # users' bundles: the platform's alone
        partial = target.with_name(target.name + ".partial")
        await asyncio.to_thread(shutil.copyfile, source, partial)
        partial.replace(target)  # a crash never leaves half an archive under the real key

    async def get(self, key: str, destination: Path) -> None:
        path = self._path(key)
        if not path.exists():
            raise FileNotFoundError(f"no archive {key!r}")
        await asyncio.to_thread(shutil.copyfile, path, destination)

    async def exists(self, key: str) -> bool:
        return self._path(key).exists()

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3ArchiveStore:
    def __init__(self, *, bucket: str, endpoint_url: str | None, region: str, access_key: str | None,
                 secret_key: str | None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        # Spaces (and other S3-compatibles) reject the CRC32 headers newer boto3 sends by default.
        config = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required",
                        retries={"max_attempts": 5, "mode": "standard"})
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                                        aws_access_key_id=access_key, aws_secret_access_key=secret_key, config=config)

    async def put(self, key: str, source: Path) -> None:
        await asyncio.to_thread(self.client.upload_file, str(source), self.bucket, _checked(key))

    def state_url(self, key: str, *, upload: bool, expires_s: int = 300) -> str:
        """A presigned URL for one object (GET, or PUT if `upload`): what an agent pod's loader may
        reach of the store, for a few minutes, with no credentials of its own. Signed locally."""
        return self.client.generate_presigned_url("put_object" if upload else "get_object", ExpiresIn=expires_s,
                                                  Params={"Bucket": self.bucket, "Key": _checked(key)})

    async def get(self, key: str, destination: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            await asyncio.to_thread(self.client.download_file, self.bucket, _checked(key), str(destination))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(f"no archive {key!r}") from None
            raise

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=_checked(key))
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=_checked(key))
