"""Source models: each maps one release format onto the canonical Arrow schemas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectome_assets.connectome.errors import CatalogError
from connectome_assets.connectome.sources.base import SourceModel
from connectome_assets.connectome.sources.cect import CectPackage
from connectome_assets.connectome.sources.flight import FlightSource
from connectome_assets.connectome.sources.flyem_feather import FlyemFeather
from connectome_assets.connectome.sources.flywire_codex import FlywireCodex
from connectome_assets.connectome.sources.neuprint_csv import NeuprintCsv

SOURCE_MODELS: dict[str, type[SourceModel]] = {
    model.name: model for model in (FlyemFeather, NeuprintCsv, FlywireCodex, CectPackage, FlightSource)
}


def open_source_model(model: str, sources: Mapping[str, str], options: Mapping[str, Any], location: str) -> SourceModel:
    """The source model named by a catalog entry, or a clear error naming the entry."""
    try:
        factory = SOURCE_MODELS[model]
    except KeyError:
        known = ", ".join(sorted(SOURCE_MODELS))
        raise CatalogError(location, f"unknown source model '{model}' (known: {known})") from None
    return factory(sources, options, location)


__all__ = ["SOURCE_MODELS", "SourceModel", "open_source_model"]
