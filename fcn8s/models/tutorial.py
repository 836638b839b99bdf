"""The MindSpore tutorial's FCN8s class, kept as written there (xavier init, native conv6, no padding).

It is the reference our FCN must match (same parameter names, same logits for the same weights)
and the "seed" baseline of `fcn8s bench --compare seed`. Inputs must be multiples of 32.
"""
from mindspore import nn


def _block(channels):
    layers = []
    for cin, cout in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(in_channels=cin, out_channels=cout, kernel_size=3, weight_init="xavier_uniform"),
                   nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.SequentialCell(*layers)


class TutorialFCN8s(nn.Cell):
    def __init__(self, n_class):
        super().__init__()
        self.n_class = n_class
        self.conv1 = _block([3, 64, 64])
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = _block([64, 128, 128])
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv3 = _block([128, 256, 256, 256])
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv4 = _block([256, 512, 512, 512])
        self.pool4 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv5 = _block([512, 512, 512, 512])
        self.pool5 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv6 = nn.SequentialCell(
            nn.Conv2d(in_channels=512, out_channels=4096, kernel_size=7, weight_init="xavier_uniform"),
            nn.BatchNorm2d(4096), nn.ReLU())
        self.conv7 = nn.SequentialCell(
            nn.Conv2d(in_channels=4096, out_channels=4096, kernel_size=1, weight_init="xavier_uniform"),
            nn.BatchNorm2d(4096), nn.ReLU())
        self.score_fr = nn.Conv2d(in_channels=4096, out_channels=n_class, kernel_size=1, weight_init="xavier_uniform")
        self.upscore2 = nn.Conv2dTranspose(in_channels=n_class, out_channels=n_class, kernel_size=4, stride=2,
                                           weight_init="xavier_uniform")
        self.score_pool4 = nn.Conv2d(in_channels=512, out_channels=n_class, kernel_size=1,
                                     weight_init="xavier_uniform")
        self.upscore_pool4 = nn.Conv2dTranspose(in_channels=n_class, out_channels=n_class, kernel_size=4, stride=2,
                                                weight_init="xavier_uniform")
        self.score_pool3 = nn.Conv2d(in_channels=256, out_channels=n_class, kernel_size=1,
                                     weight_init="xavier_uniform")
        self.upscore8 = nn.Conv2dTranspose(in_channels=n_class, out_channels=n_class, kernel_size=16, stride=8,
                                           weight_init="xavier_uniform")

    def construct(self, x):
        x1 = self.conv1(x)
        p1 = self.pool1(x1)
        x2 = self.conv2(p1)
        p2 = self.pool2(x2)
        x3 = self.conv3(p2)
        p3 = self.pool3(x3)
        x4 = self.conv4(p3)
        p4 = self.pool4(x4)
        x5 = self.conv5(p4)
        p5 = self.pool5(x5)
        x6 = self.conv6(p5)
        x7 = self.conv7(x6)
        sf = self.score_fr(x7)
        u2 = self.upscore2(sf)
        s4 = self.score_pool4(p4)
        f4 = s4 + u2
        u4 = self.upscore_pool4(f4)
        s3 = self.score_pool3(p3)
        f3 = s3 + u4
        out = self.upscore8(f3)
        return out
