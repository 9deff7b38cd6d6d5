"""The detail stage behind one interface: `Refiner` (a prior output batch -> A', L')."""


class Refiner:
    """Detail refinement: a `PriorModule` output dict (batch) -> {'albedo_uv' [B, S, S, 3], 'light_uv' [B, S, S, 27]}.

    The product (`tf_facetex.pipeline`), the evaluation (`tf_facetex.evaluation.variants`) and the exports call
    the same refiners. Attributes: ``name`` (for reports), ``uv_size`` (the UV size it needs, or None for any).
    """

    name = "refiner"
    uv_size = None
    # Takes ``groups`` (photos of one person fit ONE albedo), ``start`` and ``fit_albedo=False`` (the light alone):
    # the per-image fit does; a network alone refines photo by photo.
    supports_groups = False

    def __call__(self, prior_out) -> dict:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}
