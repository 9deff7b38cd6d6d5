// The tf_facetex face viewer: one glTF face (embedded in the page as base64, so the page works from file://,
// where Chromium blocks fetch() and ES-module imports), orbit controls, and a directional light moved with the
// sliders (azimuth / elevation around the face) or by dragging with the right mouse button.
// Bundled with three.js into ../facetex_viewer.js by scripts/build_viewer.sh (esbuild, an IIFE: a classic script).
import {
  AmbientLight, Box3, Color, DirectionalLight, PerspectiveCamera, Scene, SRGBColorSpace, Vector3, WebGLRenderer,
} from "three";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";

const DEG = Math.PI / 180;

function decodeBase64(text) {
  const binary = atob(text.replace(/\s+/g, ""));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

function lightDirection(azimuthDeg, elevationDeg) {
  // Azimuth 0 = in front of the face (+z), positive towards the face's left (+x); elevation up (+y).
  const a = azimuthDeg * DEG, e = elevationDeg * DEG;
  return new Vector3(Math.sin(a) * Math.cos(e), Math.sin(e), Math.cos(a) * Math.cos(e));
}

export function startViewer(container, glbBase64, options = {}) {
  const state = { frames: 0, error: null, azimuth: options.azimuth ?? 30, elevation: options.elevation ?? 20,
                  intensity: options.intensity ?? 2.5 };
  window.facetexViewer = state;
  const renderer = new WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  renderer.outputColorSpace = SRGBColorSpace;
  container.appendChild(renderer.domElement);
  const scene = new Scene();
  scene.background = new Color(0x202226);
  const camera = new PerspectiveCamera(25, 1, 0.01, 100);
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.enablePan = false;
  controls.enableDamping = false;
  controls.mouseButtons.RIGHT = null;          // the right button moves the light
  const ambient = new AmbientLight(0xffffff, 0.35);
  const light = new DirectionalLight(0xffffff, state.intensity);
  scene.add(ambient, light, light.target);
  let radius = 0.2;
  const centre = new Vector3();

  function placeLight() {
    light.position.copy(lightDirection(state.azimuth, state.elevation).multiplyScalar(4 * radius).add(centre));
    light.target.position.copy(centre);
    light.intensity = state.intensity;
  }
  function resize() {
    const width = container.clientWidth || 320, height = container.clientHeight || 320;
    renderer.setSize(width, height, false);
    renderer.domElement.style.width = "100%";
    renderer.domElement.style.height = "100%";
    camera.aspect = width / height;
    camera.updateProjectionMatrix();
  }
  function render() {
    placeLight();
    renderer.render(scene, camera);
    state.frames += 1;
  }
  window.addEventListener("resize", () => { resize(); render(); });
  controls.addEventListener("change", render);

  // Sliders, if the page has them.
  for (const key of ["azimuth", "elevation", "intensity"]) {
    const input = document.getElementById(`light-${key}`);
    if (!input) continue;
    input.value = state[key];
    input.addEventListener("input", () => { state[key] = parseFloat(input.value); render(); });
  }
  // Right-button drag: the light follows the pointer (x -> azimuth, y -> elevation).
  renderer.domElement.addEventListener("contextmenu", (event) => event.preventDefault());
  renderer.domElement.addEventListener("pointermove", (event) => {
    if (!(event.buttons & 2)) return;
    const rect = renderer.domElement.getBoundingClientRect();
    state.azimuth = ((event.clientX - rect.left) / rect.width - 0.5) * 180;
    state.elevation = (0.5 - (event.clientY - rect.top) / rect.height) * 180;
    for (const key of ["azimuth", "elevation"]) {
      const input = document.getElementById(`light-${key}`);
      if (input) input.value = state[key];
    }
    render();
  });

  resize();
  new GLTFLoader().parse(decodeBase64(glbBase64), "", (gltf) => {
    scene.add(gltf.scene);
    const box = new Box3().setFromObject(gltf.scene);
    box.getCenter(centre);
    radius = box.getSize(new Vector3()).length() / 2;
    camera.position.copy(centre).add(new Vector3(0, 0, radius / Math.tan(camera.fov * DEG / 2) * 1.1));
    camera.near = radius / 100;
    camera.far = radius * 100;
    camera.updateProjectionMatrix();
    controls.target.copy(centre);
    controls.update();
    render();
  }, (error) => {
    state.error = String(error && error.message || error);
    console.error("tf_facetex viewer: cannot load the face:", error);
  });
  return state;
}

window.facetexStartViewer = startViewer;
