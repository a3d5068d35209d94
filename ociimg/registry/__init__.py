"""The distribution-spec client: pull, push and copy images; log in and out.

``transport`` (HTTP policy) → ``auth`` (challenges, tokens, auth files) → ``client``
(API verbs) → ``pull`` / ``push`` / ``copy`` (orchestration with bounded concurrency).
"""

from ociimg.registry.auth import login, logout
from ociimg.registry.client import ClientOptions, RegistryClient
from ociimg.registry.copy import CopyOptions, copy
from ociimg.registry.pull import PullOptions, PullResult, pull
from ociimg.registry.push import PushOptions, push

__all__ = ["ClientOptions", "CopyOptions", "PullOptions", "PullResult", "PushOptions",
           "RegistryClient", "copy", "login", "logout", "pull", "push"]
