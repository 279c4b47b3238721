"""geoapp: cross-view geo-localization of narrow field-of-view ground photos.

Implements (and extends) "Cross-View Image Geo-localization Based on Attention Weight Masks"
(Zhu, Sun, Xu, ITC 2025): ResNet18 with Coordinate Attention, attention-mask window alignment on
polar-transformed satellite images, multi-scale descriptors and a soft-margin triplet loss.
Conventions (angles, sizes, metrics) are fixed in docs/conventions.md; modules cite its sections as "conventions §n".
"""

__version__ = "0.1.0"
