"""Every public-zoo network by name, with its family and input shape."""

from __future__ import annotations

from . import classic, dense, mobile, temporal, transformers
from . import mlperf_tiny as mlperf
from .registry import PublicModel


_ALL = (
    PublicModel("mlperf_resnet8", "mlperf_tiny", mlperf.ResNet8, (1, 3, 32, 32)),
    PublicModel("mlperf_dscnn", "mlperf_tiny", mlperf.DSCNN, (1, 1, 49, 10)),
    PublicModel("mlperf_mobilenetv1_vww", "mlperf_tiny", mlperf.MobileNetV1, (1, 3, 96, 96)),
    PublicModel("mlperf_fc_autoencoder", "mlperf_tiny", mlperf.FcAutoencoder, (1, 640)),
    PublicModel("mobilenetv2_035", "mobile", mobile.mobilenetv2, (1, 3, 64, 64)),
    PublicModel("mobilenetv3_small_050", "mobile", mobile.mobilenetv3_small, (1, 3, 64, 64)),
    PublicModel("mnasnet_050", "mobile", mobile.mnasnet, (1, 3, 64, 64)),
    PublicModel("lcnet_025", "mobile", mobile.lcnet, (1, 3, 64, 64)),
    PublicModel("efficientnet_lite0_050", "mobile", mobile.efficientnet_lite0, (1, 3, 64, 64)),
    PublicModel("efficientnet_b0_035", "mobile", mobile.efficientnet_b0, (1, 3, 64, 64)),
    PublicModel("resnet18_narrow", "classic", classic.ResNet18, (1, 3, 64, 64)),
    PublicModel("regnetx_200mf_narrow", "classic", classic.RegNetX, (1, 3, 64, 64)),
    PublicModel("ghostnet_050", "classic", classic.GhostNet, (1, 3, 64, 64)),
    PublicModel("shufflenetv2_050", "classic", classic.ShuffleNetV2, (1, 3, 48, 64)),
    PublicModel("squeezenet_11", "classic", classic.SqueezeNet, (1, 3, 64, 64)),
    PublicModel("densenet_tiny", "classic", classic.DenseNet, (1, 3, 32, 32)),
    PublicModel("vit_tiny_cls_first", "transformer", transformers.vit_cls_first, (1, 3, 32, 32)),
    PublicModel("vit_tiny_cls_last", "transformer", transformers.vit_cls_last, (1, 3, 32, 32)),
    PublicModel("mobilevit_xxs_like", "transformer", transformers.MobileViT, (1, 3, 64, 64)),
    PublicModel("convnext_tiny_like", "transformer", transformers.ConvNeXt, (1, 3, 32, 32)),
    PublicModel("mlp_mixer_tiny", "transformer", transformers.MlpMixer, (1, 3, 32, 32)),
    PublicModel("attention_pool_cnn", "transformer", transformers.AttentionPoolNet, (1, 3, 32, 32)),
    PublicModel("unet_small", "encoder_decoder", dense.UNet, (1, 1, 32, 32)),
    PublicModel("conv_autoencoder", "encoder_decoder", dense.ConvAutoencoder, (1, 1, 28, 28)),
    PublicModel("lraspp_tiny", "encoder_decoder", dense.LRASPP, (1, 3, 32, 32)),
    PublicModel("tcn_causal", "temporal", temporal.TCN, (1, 4, 64)),
    PublicModel("har_cnn1d", "temporal", temporal.HarCnn1d, (1, 3, 128)),
    PublicModel("tc_resnet8", "temporal", temporal.TcResNet8, (1, 40, 49)),
    PublicModel("wavenet_tiny", "temporal", temporal.WaveNet, (1, 1, 128)),
    PublicModel("kws_gru", "recurrent", temporal.kws_gru, (1, 49, 10)),
    PublicModel("kws_lstm", "recurrent", temporal.kws_lstm, (1, 49, 10)),
    PublicModel("har_bigru", "recurrent", temporal.har_bigru, (1, 64, 6)),
)

PUBLIC_MODELS: dict[str, PublicModel] = {m.name: m for m in _ALL}
"""Every public-zoo network by name, in catalogue order."""
