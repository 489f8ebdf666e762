"""Every tuning choice of the generated kernels, in one place: tile sizes, warps, configs and the host-side
functions that pick them, each with the section of ``docs/tuning.md`` that holds its measurements.

Generated files carry the configs as functions of the target (``matmul_configs()``, the Triton tutorials'
way) and the host-side rules as small functions (``row_slices``, ``tile_width``), so a file reads as its GPU
runs it; the checker's interpreter runs every config (each once while tuning).
"""

from __future__ import annotations

from fusionforge.tasks import LONG_ROW

DOC = "docs/tuning.md"


def see(section: str) -> str:
    """The one-line reference a generated file gives for a tuning choice."""
    return f"{DOC}#{section}"


# Pointwise: flat blocks of POINTWISE_BLOCK elements on POINTWISE_WARPS warps (8 contiguous values a thread);
# with a per-row or per-column vector, [POINTWISE_TILE / BLOCK_N, BLOCK_N] tiles (BLOCK_N at most
# POINTWISE_TILE_N), numbered row by row.
POINTWISE_BLOCK, POINTWISE_WARPS = 1024, 4
POINTWISE_TILE, POINTWISE_TILE_N = 2048, 1024

# Pooling: POOL_BLOCK consecutive outputs a program on POOL_WARPS warps.
POOL_BLOCK, POOL_WARPS = 1024, 4

# Causal conv1d: [CONV_TILE / BLOCK_N, BLOCK_N] tiles of the output (BLOCK_N at most CONV_TILE_N positions) on
# CONV_WARPS warps.
CONV_TILE, CONV_TILE_N, CONV_WARPS = 2048, 256, 4

# Conv2d, an implicit GEMM: (BLOCK_M positions, BLOCK_N output channels, BLOCK_K window values, warps, stages),
# autotuned; BLOCK_N 32 for groups of few channels, BLOCK_K 32 for groups of 32 input channels, BLOCK_N 256 to
# share a gathered x tile among 256 output channels. A group of at least CONV2D_TAP_LOOP_J input channels at the bench
# shape is walked tap by tap, its channels BLOCK_K at a time; fewer, a window's values flattened.
CONV2D_TAP_LOOP_J = 32
CONV2D_CONFIGS = {
    "16bit": ((128, 128, 64, 8, 3), (128, 64, 64, 4, 3), (128, 32, 64, 4, 3), (128, 256, 64, 8, 3),
              (128, 64, 32, 4, 4)),
    "float32": ((128, 64, 32, 4, 3), (64, 64, 32, 4, 3), (128, 32, 32, 4, 3)),
}

# Depthwise conv2d: DEPTHWISE_BLOCK consecutive outputs a program on DEPTHWISE_WARPS warps, as pooling's.
DEPTHWISE_BLOCK, DEPTHWISE_WARPS = 1024, 4

# Rows: up to MAX_ROW_BLOCK values held in registers; longer rows are walked (slices, or a 3D group norm's
# tiles). Reductions over rows under SHORT_ROW_BYTES read [ROWS, BLOCK_N] tiles of SHORT_ROW_TILE values.
MAX_ROW_BLOCK = LONG_ROW
SHORT_ROW_BYTES, SHORT_ROW_TILE = 2048, 2048
ROW_WARPS = (1, 2, 4, 8, 16)
LOOPED_SLICES, LOOPED_FALLBACK = (16384, 8192), (4096, 8)  # (slice values, warps) of the fallback
GROUP_TILES = ((16384, 16), (8192, 8), (4096, 4))  # (TILE values, warps)

# A per-tensor fp8 amax over rows shorter than AMAX_TILE at the bench shape: [ROWS, BLOCK_N] tiles of AMAX_TILE
# values, AMAX_PROGRAMS_PER_SM programs an SM striding over the rows, each one atomic max at its end (one a row
# queued on a single address); longer rows take a program a row.
AMAX_TILE, AMAX_PROGRAMS_PER_SM = 4096, 4

# Matmul tiles (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), GROUP_M = 8.
MATMUL_CONFIGS = {
    "16bit": ((128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (256, 128, 64, 8, 3), (128, 128, 32, 4, 4)),
    "float32": ((128, 128, 32, 8, 3), (64, 128, 32, 4, 4), (128, 64, 32, 4, 4)),
    "persistent": ((128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 8, 4)),
}

# Losses: [ROWS, CHUNK] tiles of LOSS_TILE values on LOSS_WARPS warps (a long row walked CHUNK = LOSS_TILE at a
# time); a mean's second kernel adds LOSS_MEAN_BLOCK partial sums at a time on LOSS_MEAN_WARPS warps.
LOSS_TILE, LOSS_WARPS = 4096, 8
LOSS_MEAN_BLOCK, LOSS_MEAN_WARPS = 4096, 8

# Attention: (BLOCK_M queries, BLOCK_N keys a step, warps, stages), autotuned. float32's tiles fit Hopper's 227 KiB
# of shared memory at head dim 128 with tf32x3 products, where the 16-bit ones would need 256-512 KiB
# (benchmarks/hopper_builds.py).
ATTENTION_TILES = {
    "16bit": ((128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 64, 8, 4), (64, 128, 4, 3),
              (128, 128, 4, 3), (64, 64, 4, 4)),
    "float32": ((64, 32, 8, 2), (128, 32, 8, 3), (64, 32, 4, 3)),
}

# Rotary embeddings of the keys before attention: [ROTARY_TILE / D, D] tiles on ROTARY_WARPS warps.
ROTARY_TILE, ROTARY_WARPS = 2048, 4

# Two reductions: tiles of TWO_REDUCTION_TILE values on TWO_REDUCTION_WARPS warps, one a program until a batch
# has TWO_REDUCTION_MAX_SPLITS of them.
TWO_REDUCTION_TILE, TWO_REDUCTION_MAX_SPLITS, TWO_REDUCTION_WARPS = 2048, 1024, 2


def tiles_literal(tiles: tuple) -> list[str]:
    """The generated ``tiles = (...)`` of a configs function, four tiles a line."""
    items = [repr(tile) for tile in tiles]
    rows = [", ".join(items[k:k + 4]) for k in range(0, len(items), 4)]
    return ["    tiles = (" + f",\n{' ' * 13}".join(rows) + ")"]


def matmul_configs(which: str) -> list[str]:
    """The generated ``matmul_configs()`` of the tiled 16-bit, tiled float32 or persistent kernel."""
    section = "persistent-matmul" if which == "persistent" else "matmul-tiles"
    return [
        "def matmul_configs():",
        f'    """Hopper tiles: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), GROUP_M 8 ({see(section)})."""',
        *tiles_literal(MATMUL_CONFIGS[which]),
        '    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_warps=w, '
        'num_stages=s)',
        "            for m, n, k, w, s in tiles]",
    ]


MATMUL_AUTOTUNE = ['@triton.autotune(configs=matmul_configs(), key=["M", "N", "K"])']


def conv2d_configs(which: str) -> list[str]:
    """The generated ``conv2d_configs()`` and the autotune decorator of the 16-bit or float32 conv2d kernel."""
    return [
        "def conv2d_configs():",
        f'    """Hopper tiles: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) ({see("conv2d-tiles")})."""',
        *tiles_literal(CONV2D_CONFIGS[which]),
        '    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)',
        "            for m, n, k, w, s in tiles]",
        "",
        "",
        '@triton.autotune(configs=conv2d_configs(), key=["n_out", "group_in", "group_out"])',
    ]


def row_warps() -> list[str]:
    """The generated configs and pruning that time a row kernel's warps where no count wins everywhere."""
    warps = ", ".join(str(w) for w in ROW_WARPS)
    return [
        "def row_configs():",
        f'    """A row kernel\'s warps ({see("row-warps")})."""',
        f"    return [triton.Config({{}}, num_warps=warps) for warps in ({warps})]",
        "",
        "",
        "def row_warps(configs, named_args, **kwargs):",
        '    """The configs worth timing at this BLOCK_N: 1-4 warps up to 1024 lanes, 4 and 8 up to 4096, 4-16 at '
        '8192,',
        '    16 above."""',
        '    block = kwargs["BLOCK_N"]',
        "    warps = (1, 2, 4) if block <= 1024 else (4, 8) if block <= 4096 else (4, 8, 16) if block == 8192 else "
        "(16,)",
        "    return [config for config in configs if config.num_warps in warps]",
        "",
        "",
        '@triton.autotune(configs=row_configs(), key=["row_len"], prune_configs_by={"early_config_prune": row_warps})',
    ]


def attention_configs(which: str) -> list[str]:
    """The generated ``attention_configs()`` ("16bit" or "float32" tiles) and the autotune decorator of the attention
    kernel."""
    return [
        "def attention_configs():",
        f'    """Hopper tiles: (BLOCK_M queries, BLOCK_N keys a step, warps, stages) ({see("attention-tiles")})."""',
        *tiles_literal(ATTENTION_TILES[which]),
        '    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in tiles]',
        "",
        "",
        '@triton.autotune(configs=attention_configs(), key=["seq_len", "HEAD_DIM"])',
    ]


def row_slices() -> list[str]:
    """The generated host function giving a looped row kernel its CHUNK and warps for a row length."""
    listed = ", ".join(str(width) for width in LOOPED_SLICES)
    chunk, warps = LOOPED_FALLBACK
    return [
        "def row_slices(row_len):",
        f'    """CHUNK and warps for rows of row_len values ({see("looped-rows")}): the widest of {listed} that',
        f'    divides the row, on 16 warps; else {chunk} on {warps}."""',
        f"    chunk = next((width for width in ({listed}) if row_len % width == 0), {chunk})",
        f"    return chunk, 16 if chunk > {chunk} else {warps}",
    ]


def loss_tiles() -> list[str]:
    """The generated host function giving a loss kernel its ROWS, CHUNK and warps for a row length."""
    return [
        "def loss_tiles(row_len):",
        f'    """ROWS, CHUNK and warps for a loss over rows of row_len values ({see("loss-tiles")}): tiles of',
        f'    {LOSS_TILE} values, a row (padded to a power of two) in one CHUNK up to that, else walked; {LOSS_WARPS} '
        'warps."""',
        f"    chunk = min(triton.next_power_of_2(row_len), {LOSS_TILE})",
        f"    return {LOSS_TILE} // chunk, chunk, {LOSS_WARPS}",
    ]


def group_tiles(groups: int) -> list[str]:
    """The generated configs and heuristics giving a 3D group norm's looped kernel its tiles."""
    listed = ", ".join(f"({tile}, {warps})" for tile, warps in GROUP_TILES)
    return [
        "def group_configs():",
        f'    """TILE values of a group\'s channels and positions on num_warps ({see("group-norm-tiles")})."""',
        f'    return [triton.Config({{"TILE": tile}}, num_warps=warps) for tile, warps in ({listed})]',
        "",
        "",
        "def tile_width(args):",
        '    """BLOCK_N: the widest power of two that divides N (no padding) if it is 128 wide or all of N, else N',
        '    padded to a power of two; TILE at most."""',
        '    block_n = min(args["n_cols"] & -args["n_cols"], args["TILE"])',
        '    if block_n < min(128, args["n_cols"]):',
        '        block_n = min(triton.next_power_of_2(args["n_cols"]), args["TILE"])',
        "    return block_n",
        "",
        "",
        "def tile_channels(args):",
        '    """C_BLOCK: the channels that fill TILE, at most a group\'s channel count padded to a power of two."""',
        f'    return min(args["TILE"] // args["BLOCK_N"], triton.next_power_of_2(args["n_chan"] // {groups}))',
        "",
        "",
        "def distinct_tiles(configs, named_args, **kwargs):",
        '    """The configs worth timing: where a group fits a smaller TILE, the larger ones give the same [C_BLOCK,',
        '    BLOCK_N] tile (the same kernel); the smallest TILE of each tile is kept."""',
        "    kept = {}",
        "    for config in configs:",
        "        args = {**named_args, **config.kwargs}",
        '        args["BLOCK_N"] = tile_width(args)',
        '        kept[args["BLOCK_N"], tile_channels(args)] = config',
        "    return list(kept.values())",
        "",
        "",
        '@triton.autotune(configs=group_configs(), key=["row_len", "n_cols", "n_chan"],',
        '                 prune_configs_by={"early_config_prune": distinct_tiles})',
        '@triton.heuristics({"BLOCK_N": tile_width, "C_BLOCK": tile_channels})',
    ]
