"""Every test process starts JAX once with 256 emulated CPU devices (the full 4x8x8 mesh);
smaller meshes are built from the first devices."""
import tpuinfer

tpuinfer.emulate(256)
