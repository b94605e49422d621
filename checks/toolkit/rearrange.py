"""The checkers of chapter 0's einops exercises: heads split and merged, images laid out in a
grid, pooling over positions, and a tensor repeated over the batch."""

import einops

from checks._core import exercise
from checks.toolkit._common import LARGE, _randn, _scaled
from solutions import toolkit as ref

# --- einops ---------------------------------------------------------------------------


def _head_cases():
    """(seed, batch, posn, n_heads, d_head, scale) for split_heads and merge_heads."""
    return [
        (81, 2, 3, 4, 4, 1.0),
        (80, 1, 1, 1, 1, 1.0),
        (82, 2, 5, 3, 4, 1.0),
        (83, 1, 7, 12, 1, 1.0),
        (84, 3, 2, 1, 8, 1.0),
        (85, 2, 16, 12, 64, LARGE),
    ]


@exercise(ref.split_heads)
def check_split_heads(check, split_heads):
    for seed, batch, posn, n_heads, d_head, scale in _head_cases():
        d_model = n_heads * d_head
        with check.case(
            f"x of shape ({batch}, {posn}, {d_model}), n_heads={n_heads}" + _scaled(scale)
        ):
            (x,) = _randn(seed, (batch, posn, d_model), scale=scale)
            wrong_grouping = einops.rearrange(
                x, "batch posn (d_head n_heads) -> batch posn n_heads d_head", n_heads=n_heads
            )
            mistakes = {
                "grouped d_model as (d_head n_heads); head h owns the consecutive slice "
                "h*d_head ... (h+1)*d_head - 1, so it is (n_heads d_head)": wrong_grouping,
            }
            shapes = [((batch, posn, d_head, n_heads), "swapped n_heads and d_head")]
            got = check.call(split_heads, x, n_heads)
            expected = ref.split_heads(x, n_heads)
            check.tensor(got, expected, what="split tensor", mistakes=mistakes, shapes=shapes)


@exercise(ref.merge_heads)
def check_merge_heads(check, merge_heads):
    for seed, batch, posn, n_heads, d_head, scale in _head_cases():
        with check.case(f"z of shape ({batch}, {posn}, {n_heads}, {d_head})" + _scaled(scale)):
            (z,) = _randn(seed, (batch, posn, n_heads, d_head), scale=scale)
            wrong_grouping = einops.rearrange(
                z, "batch posn n_heads d_head -> batch posn (d_head n_heads)"
            )
            mistakes = {
                "merged the axes as (d_head n_heads); head h's vector must stay "
                "consecutive, so it is (n_heads d_head)": wrong_grouping,
                "summed the heads: merging concatenates them": z.sum(2),
            }
            shapes = [((batch, posn, d_head), "summed (or averaged) the heads: concatenate them")]
            got = check.call(merge_heads, z)
            check.tensor(
                got,
                ref.merge_heads(z),
                what="merged tensor",
                mistakes=mistakes,
                shapes=shapes,
            )


@exercise(ref.image_grid)
def check_image_grid(check, image_grid):
    for seed, (b, n_rows, h, w), scale in [
        (141, (6, 2, 4, 4), 1.0),
        (140, (1, 1, 1, 1), 1.0),
        (142, (6, 3, 2, 5), 1.0),
        (143, (4, 4, 3, 2), 1.0),
        (144, (5, 1, 3, 3), 1.0),
        (145, (12, 3, 8, 8), LARGE),
    ]:
        with check.case(f"images of shape ({b}, {h}, {w}), n_rows={n_rows}" + _scaled(scale)):
            (images,) = _randn(seed, (b, h, w), scale=scale)
            grid = lambda pattern, x=images, r=n_rows: einops.rearrange(x, pattern, r=r)  # noqa: E731
            mistakes = {
                "filled the grid column by column: with the batch split as (r c), grid row r is "
                "the slow index, so images 0, 1, ... go along the first row": grid(
                    "(c r) h w -> (r h) (c w)"
                ),
                "interleaved the images' pixels: merge as (r h) and (c w), the grid index "
                "slow and the pixel index fast": grid("(r c) h w -> (h r) (w c)"),
                "interleaved the pixel rows of the images: merge as (r h), grid row slow": grid(
                    "(r c) h w -> (h r) (c w)"
                ),
                "interleaved the pixel columns of the images: merge as (c w), grid column "
                "slow": grid("(r c) h w -> (r h) (w c)"),
                "made n_rows the number of grid columns; it is the number of rows": (
                    einops.rearrange(images, "(r c) h w -> (r h) (c w)", c=n_rows)
                ),
                "transposed the grid: rows of images run along the picture's width": grid(
                    "(r c) h w -> (c h) (r w)"
                ),
            }
            if h == w:
                mistakes["transposed each image: h goes with the grid rows, w with columns"] = grid(
                    "(r c) h w -> (r w) (c h)"
                )
            shapes = [
                ((b * h, w), "stacked every image in one column: n_rows rows of b / n_rows"),
                ((h, b * w), "laid every image side by side in one row"),
            ]
            got = check.call(image_grid, images, n_rows)
            expected = ref.image_grid(images, n_rows)
            check.tensor(got, expected, what="grid", mistakes=mistakes, shapes=shapes)


@exercise(ref.mean_pool)
def check_mean_pool(check, mean_pool):
    for seed, (batch, posn, d_model), scale in [
        (91, (2, 4, 4), 1.0),
        (90, (1, 1, 1), 1.0),
        (92, (3, 7, 5), 1.0),
        (93, (2, 1, 6), 1.0),
        (94, (4, 32, 16), LARGE),
    ]:
        with check.case(f"x of shape ({batch}, {posn}, {d_model})" + _scaled(scale)):
            (x,) = _randn(seed, (batch, posn, d_model), scale=scale)
            mistakes = {
                "averaged over d_model; the pool averages over posn": x.mean(-1),
                "summed over posn instead of averaging": x.sum(1),
                "took the maximum over posn instead of the mean": x.amax(1),
            }
            shapes = [
                ((batch, posn), "averaged over d_model; the pool averages over posn"),
                ((), "averaged over every axis; average over posn only"),
                ((d_model,), "averaged over batch and posn; average over posn only"),
            ]
            got = check.call(mean_pool, x)
            check.tensor(
                got, ref.mean_pool(x), what="pooled tensor", mistakes=mistakes, shapes=shapes
            )


@exercise(ref.max_pool)
def check_max_pool(check, max_pool):
    for seed, (b, h, w), k, scale in [
        (151, (2, 6, 6), 2, 1.0),
        (150, (1, 1, 1), 1, 1.0),
        (152, (3, 4, 6), 2, 1.0),
        (153, (2, 6, 3), 3, 1.0),
        (154, (2, 5, 5), 5, 1.0),
        (155, (4, 16, 16), 4, LARGE),
    ]:
        with check.case(f"images of shape ({b}, {h}, {w}), k={k}" + _scaled(scale)):
            (images,) = _randn(seed, (b, h, w), scale=scale)
            tiles = einops.rearrange(images, "b (h i) (w j) -> b h w i j", i=k, j=k)
            mistakes = {
                "pooled entries k apart instead of neighbours: split each axis as (h i), the "
                "tile index slow and the offset inside the tile fast": einops.reduce(
                    images, "b (i h) (j w) -> b h w", "max", i=k, j=k
                ),
                "averaged each tile (average pooling); max-pooling keeps its largest entry": (
                    tiles.mean((-2, -1))
                ),
                "took each tile's smallest entry; max-pooling keeps its largest": tiles.amin(
                    (-2, -1)
                ),
            }
            shapes = [
                ((b, h // k, w), "pooled along h only; pool along w as well"),
                ((b, h, w // k), "pooled along w only; pool along h as well"),
                ((b,), "took the maximum of each whole image; pool each k x k tile"),
            ]
            if (h // k, w // k) != (k, k):
                shapes.append(
                    ((b, k, k), "made k the number of tiles per side; k is a tile's size")
                )
            got = check.call(max_pool, images, k)
            expected = ref.max_pool(images, k)
            check.tensor(got, expected, what="pooled images", mistakes=mistakes, shapes=shapes)


@exercise(ref.repeat_over_batch)
def check_repeat_over_batch(check, repeat_over_batch):
    for seed, (posn, d_model), batch, scale in [
        (101, (3, 5), 3, 1.0),
        (100, (1, 1), 1, 1.0),
        (102, (4, 6), 2, 1.0),
        (103, (5, 3), 1, 1.0),
        (104, (16, 8), 4, LARGE),
    ]:
        with check.case(f"W_pos of shape ({posn}, {d_model}), batch={batch}" + _scaled(scale)):
            (W_pos,) = _randn(seed, (posn, d_model), scale=scale)
            mistakes = {
                "put the new batch axis after posn; the output is batch posn d_model": (
                    einops.repeat(W_pos, "posn d_model -> posn batch d_model", batch=batch)
                ),
            }
            shapes = [
                ((batch * posn, d_model), "stacked the copies along one axis; keep batch apart"),
                ((posn, batch * d_model), "laid the copies side by side along d_model"),
            ]
            got = check.call(repeat_over_batch, W_pos, batch)
            expected = ref.repeat_over_batch(W_pos, batch)
            check.tensor(got, expected, what="repeated tensor", mistakes=mistakes, shapes=shapes)
