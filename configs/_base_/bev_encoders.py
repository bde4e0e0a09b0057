# The BEV encoders of the published BEVFormer models (projects/bevformer), as variables that
# detector configs drop into their model: `encoder=_base_.bevformer_tiny_encoder`. Sizes from the
# BEVFormer release: tiny (R50, C5 only, 800x450 images): 50x50 BEV, 3 layers; small (R101-DCN,
# C5 only, 1280x720): 150x150, 3 layers; base (R101-DCN, 4 FPN levels, 1600x900): 200x200,
# 6 layers. All: 256 channels, 6 cameras, 4 heights per pillar, 8 heads, temporal self-attention
# with 4 points, spatial cross-attention with 8 points per level, FFN 512, dropout 0.1.
# They run the official code path, so that converted official checkpoints compute what the
# official models compute (docs/official_differences.md): the CAN-bus MLP, the previous BEV turned
# about the pixel (100, 100) and the reference points shifted by the CAN-bus motion, and camera
# hits counted over the padded image. Needs CAN-bus values in the infos (`with_can_bus`).

bev_point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]

bevformer_tiny_encoder = dict(
    type='BEVFormerEncoder',
    bev_h=50,
    bev_w=50,
    point_cloud_range=bev_point_cloud_range,
    num_layers=3,
    embed_dims=256,
    num_cams=6,
    num_feature_levels=1,
    num_points_in_pillar=4,
    use_can_bus=True,
    can_bus_norm=True,
    temporal_alignment='official',
    rotate_center=[100, 100],
    hit_area='padded',
    layer_cfg=dict(
        feedforward_channels=512,
        ffn_drop=0.1,
        self_attn_cfg=dict(num_heads=8, num_points=4, dropout=0.1),
        cross_attn_cfg=dict(num_heads=8, num_points=8, dropout=0.1)))

bevformer_small_encoder = dict(bevformer_tiny_encoder, bev_h=150, bev_w=150)

bevformer_base_encoder = dict(
    bevformer_tiny_encoder, bev_h=200, bev_w=200, num_layers=6, num_feature_levels=4)
