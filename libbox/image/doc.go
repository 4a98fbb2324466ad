// Package image is libbox's local image store: it turns an image reference
// (the builtin "busybox", a registry reference as Docker users write it, or an
// offline oci-layout / docker-archive source) into an unpacked, read-only root
// filesystem directory plus the image config the runtime uses as box
// defaults.
//
// Layout of the store directory ($LIBBOX_HOME/images):
//
//	index.json           ref+platform -> image record (written atomically)
//	blobs/sha256/<hex>   layers (as fetched, usually gzip) and configs, verified
//	roots/<hex>          unpacked root filesystems, named by image ID
//	tmp/                 work in progress; never read, cleared by Open
//	*.lock               flock files coordinating processes sharing the store
//
// Guarantees: a root directory appears (by rename) only once complete and is
// never modified afterwards, so the runtime may use it as an overlay lower
// dir or copy it, but it must not write into it. Blobs are verified against
// their digest before they enter the cache; an image pulled once is never
// downloaded again. Concurrent Gets of one image share one pull. All methods
// are safe for concurrent use, also by several processes on one directory.
//
// The package must never follow an image's symlinks on the host while
// unpacking (every path is resolved inside the root with os.Root), never
// write outside the store directory, never use the network for the builtin
// image or offline sources, and never talk plain HTTP to a registry that is
// not listed as insecure (Registries.Insecure). It never reads the
// environment: libbox.Open reads these variables into Registries
// (ParseRegistries):
//
//	LIBBOX_REGISTRY_AUTH        registry=user:password[,registry=user:password...]
//	                            (docker.io means Docker Hub; passwords must not
//	                            contain ','; the Docker config file and its
//	                            credential helpers are consulted as well)
//	LIBBOX_INSECURE_REGISTRIES  host[:port][,...] that may be reached over
//	                            plain HTTP (or HTTPS without verification)
//	LIBBOX_REGISTRY_MIRRORS     registry=mirror[:port][,...], e.g.
//	                            docker.io=mirror.local:5000; mirrors are tried in
//	                            order before the registry itself, which is the
//	                            fallback when a mirror is down or lacks the image
//
// Unpacking: layers are applied in order; whiteouts and opaque directories
// are honoured; ownership is kept when running as root; device nodes and
// FIFOs are skipped (the guest mounts devtmpfs on /dev); extended attributes
// are dropped; symlink mtimes are not set. Writing through a symlink whose
// target leaves the root (also an absolute symlink to a directory) is refused.
package image
