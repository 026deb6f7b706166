"""Block profiles of guest programs from a QEMU plugin, and per-core cycle estimates from them."""
