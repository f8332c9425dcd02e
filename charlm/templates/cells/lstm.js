// nn.LSTM (charlm.cells.LSTM.step), gates in its order (i, f, g, o):
//   i, f, o = sigmoid(.)   g = tanh(.)   c = f c + i g   h = o tanh(c)
(xW, hW, h, c) => {
  const H = h.length;
  for (let j = 0; j < H; j++) {
    const i = sigmoid(xW[j] + hW[j]);
    const f = sigmoid(xW[H + j] + hW[H + j]);
    const g = Math.tanh(xW[2 * H + j] + hW[2 * H + j]);
    const o = sigmoid(xW[3 * H + j] + hW[3 * H + j]);
    c[j] = f * c[j] + i * g;
    h[j] = o * Math.tanh(c[j]);
  }
}
