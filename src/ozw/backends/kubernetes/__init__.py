"""The Kubernetes backend: every task a Job on a cluster (docs/protocol.md).

One idea per module:

- :mod:`~ozw.backends.kubernetes.backend`: :class:`KubernetesBackend` (check, adopt, open runs).
- :mod:`~ozw.backends.kubernetes.task`: :class:`KubernetesTaskRun`, one task's Job.
- :mod:`~ozw.backends.kubernetes.rules`: pod / Job status → failure reason; adoption.
- :mod:`~ozw.backends.kubernetes.names`: Job names, labels, hashes, annotations.
- :mod:`~ozw.backends.kubernetes.manifests`: the task Job, its Secret, the preflight Job.
- :mod:`~ozw.backends.kubernetes.pod_template`: the worker's parts laid over ``pod_template``.
- :mod:`~ozw.backends.kubernetes.monitor`: following one Job to its end.
- :mod:`~ozw.backends.kubernetes.preflight`: permissions and the preflight Job.
- :mod:`~ozw.backends.kubernetes.client`: the API calls (lightkube), bounded, anyio only.

Rules, names, manifests and pod_template are pure; the rest do I/O. The
``[backend.kubernetes]`` table is :class:`ozw.config.KubernetesConfig`; its
``pod_template`` is checked against the Kubernetes model in :mod:`ozw.config.pod_spec`.
"""
