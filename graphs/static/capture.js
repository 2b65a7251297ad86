// AudioWorklet processor: copies the microphone's first channel to the page while recording.
// Messages in: "start", "stop". Out: Float32Array chunks, then {flushed: true} after "stop".
const CHUNK = 4096;

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.active = false;
    this.buffer = new Float32Array(CHUNK);
    this.filled = 0;
    this.port.onmessage = ({ data }) => {
      if (data === "start") {
        this.filled = 0;
        this.active = true;
      } else if (data === "stop") {
        this.active = false;
        this.flush();
        this.port.postMessage({ flushed: true });
      }
    };
  }

  flush() {
    if (this.filled) this.port.postMessage(this.buffer.slice(0, this.filled));
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (this.active && channel) {
      let read = 0;
      while (read < channel.length) {
        const n = Math.min(channel.length - read, CHUNK - this.filled);
        this.buffer.set(channel.subarray(read, read + n), this.filled);
        this.filled += n;
        read += n;
        if (this.filled === CHUNK) this.flush();
      }
    }
    return true;
  }
}

registerProcessor("capture", Capture);
