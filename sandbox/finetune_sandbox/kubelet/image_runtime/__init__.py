"""The kubelet's image runtime: each container runs from the image its pod names, with buildah and no engine.

One container start:

  buildah from --pull-never IMAGE        a working container (its own writable layer) for this start
  buildah mount CTR                      its root filesystem, an overlay on this machine
  unshare --mount --propagation private sh -c SCRIPT

SCRIPT builds the container's view in a private mount namespace (nothing leaks to the host): the rootfs bound on
itself (remounted read-only for readOnlyRootFilesystem), /proc, a tmpfs /dev with the usual device nodes and a
/dev/shm, /sys read-only, the host's /etc/resolv.conf and /etc/hosts, the pod's volumes at their mount paths and
the kubelet's termination-message file at terminationMessagePath; then

  exec chroot --userspec=UID:GID --groups=GIDS ROOT /usr/bin/env -i -C WORKDIR K=V ... COMMAND ARGS...

sh, chroot and env all exec, so the PID the kubelet started is the container's process: SIGTERM/SIGKILL to its
process group and the exit code work as in the process runtime.

The modules, in the order a start uses them: `buildah` (the working container: the runtime's only contact
with images, local storage only), `plan` (what to run, as whom, with which env and mounts, by Kubernetes'
rules; pure), `filesystem` (the image's accounts, volume ownership: reads and changes files on this machine),
`command` (the command line above; pure).
"""
